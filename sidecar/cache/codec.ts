import type { CacheEntry } from './types.js'

/**
 * The binary form of an entry in byte-valued stores (SQLite BLOB, Redis string): a 4-byte
 * header length, the metadata as JSON, then the image bytes as they are — no base64.
 */
export function encodeEntry(entry: CacheEntry, keepUntil?: number): Buffer {
  const { buffer, ...meta } = entry
  const header = Buffer.from(JSON.stringify(keepUntil ? { ...meta, keepUntil } : meta))
  const length = Buffer.alloc(4)
  length.writeUInt32BE(header.byteLength)
  return Buffer.concat([length, header, buffer])
}

/** The metadata alone, from the first bytes of an encoded entry (or undefined if they are not one). */
export function decodeMeta(value: Buffer): (Omit<CacheEntry, 'buffer'> & { keepUntil?: number }) | undefined {
  if (value.byteLength < 4) return undefined
  const length = value.readUInt32BE(0)
  if (4 + length > value.byteLength) return undefined
  try {
    const meta = JSON.parse(value.subarray(4, 4 + length).toString()) as Omit<CacheEntry, 'buffer'> & { keepUntil?: number }
    return typeof meta.contentType === 'string' && typeof meta.expireAt === 'number' ? meta : undefined
  } catch {
    return undefined
  }
}

export function decodeEntry(value: Buffer): CacheEntry | undefined {
  const meta = decodeMeta(value)
  if (!meta) return undefined
  const { keepUntil: _keepUntil, ...entry } = meta
  // A view, not a copy: the entry owns the value it was decoded from.
  return { ...entry, buffer: value.subarray(4 + value.readUInt32BE(0)) }
}
