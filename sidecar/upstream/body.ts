import type { IncomingMessage } from 'node:http'
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream'
import { constants as zlib, createBrotliDecompress, createGunzip, createInflate, createInflateRaw } from 'node:zlib'
import { ImageError } from '../errors.js'
import { fetchFailed } from './http.js'

/** zlib 'deflate' is ambiguous in the wild: zlib-wrapped or raw. Decide on the first byte. */
class DeflateDecoder extends Transform {
  private decoder: Transform | undefined
  override _transform(chunk: Buffer, encoding: BufferEncoding, callback: TransformCallback) {
    if (!this.decoder) {
      if (chunk.length === 0) return callback()
      const options = { flush: zlib.Z_SYNC_FLUSH, finishFlush: zlib.Z_SYNC_FLUSH }
      this.decoder = (chunk[0]! & 0x0f) === 0x08 ? createInflate(options) : createInflateRaw(options)
      this.decoder.on('data', (data: Buffer) => this.push(data))
      this.decoder.on('end', () => this.push(null))
      this.decoder.on('error', (err) => this.destroy(err))
    }
    this.decoder.write(chunk, encoding, callback)
  }
  override _final(callback: TransformCallback) {
    this.decoder?.end()
    this.decoder = undefined
    callback()
  }
}

const MAX_CONTENT_ENCODINGS = 5

/** Decodes Content-Encoding as Next does; an unknown coding leaves the body as it is. */
function decodeBody(res: IncomingMessage, invalidMessage: string, asFetch: boolean): Readable {
  const header = res.headers['content-encoding']
  if (!header) return res
  const codings = header.toLowerCase().split(',')
  if (codings.length > MAX_CONTENT_ENCODINGS) {
    throw asFetch ? fetchFailed(`${codings.length} content-codings`) : new ImageError(400, invalidMessage)
  }
  const decoders: Transform[] = []
  for (let i = codings.length - 1; i >= 0; i--) {
    switch (codings[i]!.trim()) {
      case 'x-gzip':
      case 'gzip':
        decoders.push(createGunzip({ flush: zlib.Z_SYNC_FLUSH, finishFlush: zlib.Z_SYNC_FLUSH }))
        break
      case 'deflate':
        decoders.push(new DeflateDecoder())
        break
      case 'br':
        decoders.push(createBrotliDecompress({ flush: zlib.BROTLI_OPERATION_FLUSH, finishFlush: zlib.BROTLI_OPERATION_FLUSH }))
        break
      default:
        return res
    }
  }
  pipeline([res, ...decoders], () => {})
  return decoders[decoders.length - 1]!
}

/** Reads a body, stopping (not buffering on) once it passes the byte limit. */
export async function readBody(res: IncomingMessage, limit: number, invalidMessage: string, asFetch = false): Promise<Buffer> {
  const chunks: Buffer[] = []
  let total = 0
  try {
    for await (const chunk of decodeBody(res, invalidMessage, asFetch) as AsyncIterable<Buffer>) {
      total += chunk.byteLength
      if (total > limit) throw new ImageError(413, invalidMessage)
      chunks.push(chunk)
    }
  } finally {
    if (!res.complete) res.destroy()
  }
  return Buffer.concat(chunks, total)
}
