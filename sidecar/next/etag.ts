import { createHash } from 'node:crypto'

/** Next's `getHash`: sha256, base64url. */
export function hashBase64url(...items: Array<string | Buffer>): string {
  const hash = createHash('sha256')
  for (const item of items) hash.update(item)
  return hash.digest('base64url')
}

/** Next's `extractEtag`: the upstream's ETag, else a hash of the body. */
export function extractEtag(etagHeader: string | undefined, body: Buffer): string {
  // base64url because a weak ETag (W/"...") must survive as a cache file name in Next.
  return etagHeader ? Buffer.from(etagHeader).toString('base64url') : hashBase64url(body)
}
