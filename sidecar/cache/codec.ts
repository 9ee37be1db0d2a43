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

/** The metadata of one stored form (what decodeEntry parses), shared by every entry read from it. */
type StoredMeta = Omit<CacheEntry, 'buffer'>
interface Form {
  /** The form's header bytes (a copy), to tell a read of the same stored form from a newer one. */
  header: Buffer
  meta: StoredMeta
  bodyBytes: number
}

/** Entries read from a stored form → the form: what the hit path and the handler key their precomputed headers by. */
const formOfEntry = new WeakMap<CacheEntry, object>()

/**
 * What a response's headers may be memoised by: the stored form an entry was read from (see
 * StoredForms), so every read of one form shares them; else the entry itself (a hot-tier entry is
 * the same object on every hit).
 */
export function formOf(entry: CacheEntry): object {
  return formOfEntry.get(entry) ?? entry
}

/**
 * decodeEntry for a store read on every hit (SQLite, Redis): the metadata of a key's stored form is
 * parsed once and kept (a few hundred bytes per key, `maxKeys` keys at most, least recently used out);
 * a read whose header bytes are the same as the kept ones' reuses it, and its entry shares the form
 * (formOf), so the response headers computed for the form are computed once too. The body is never
 * kept: it is the value's bytes as the driver returned them, a view, no copy.
 */
export class StoredForms {
  private readonly forms = new Map<string, Form>()
  /** What the forms held take (see cost), kept within maxBytes. */
  private bytes = 0
  /** Stored forms parsed (tests: a form read again is not parsed again). */
  parsed = 0

  /**
   * At most `maxKeys` forms and `maxBytes` of them: a header carries its source URL (up to 3,072
   * characters), so 10,000 worst-case forms took 27 MiB per store and process, outside the memory plan.
   */
  constructor(
    private readonly maxKeys = 10_000,
    readonly maxBytes = 4 * 1024 * 1024,
  ) {}

  /** Bytes held: forms' size in memory, as seen by maxBytes. */
  get size(): number {
    return this.bytes
  }

  decode(key: string, value: Buffer): CacheEntry | undefined {
    if (value.byteLength < 4) return undefined
    const length = value.readUInt32BE(0)
    if (4 + length > value.byteLength) return undefined
    const header = value.subarray(4, 4 + length)
    const buffer = value.subarray(4 + length)
    let form = this.forms.get(key)
    if (form && form.bodyBytes === buffer.byteLength && form.header.equals(header)) {
      // Most recently used last, so the first key is the one to let go.
      this.forms.delete(key)
      this.forms.set(key, form)
    } else {
      this.parsed++
      const meta = decodeMeta(value)
      if (!meta) {
        this.forms.delete(key)
        return undefined
      }
      const { keepUntil: _keepUntil, ...stored } = meta
      form = { header: Buffer.from(header), meta: stored, bodyBytes: buffer.byteLength }
      this.forget(key)
      this.forms.set(key, form)
      this.bytes += cost(form)
      while (this.forms.size > this.maxKeys || this.bytes > this.maxBytes) this.forget(this.forms.keys().next().value!)
    }
    const entry: CacheEntry = { ...form.meta, buffer }
    formOfEntry.set(entry, form)
    return entry
  }

  /** A key deleted or purged: its form goes (a new one is parsed on the next read anyway). */
  forget(key: string): void {
    const form = this.forms.get(key)
    if (!form) return
    this.forms.delete(key)
    this.bytes -= cost(form)
  }
}

/** A form's size in memory, about: its header copy, and the parsed metadata (its strings, UTF-16) and objects. */
const cost = (form: Form) => form.header.byteLength * 3 + 256
