import { hashBase64url } from '../next/etag.js'
import type { NextMajor } from '../next/next-version.js'

/** Bumped whenever what a key covers changes, so old entries are never read as new ones. */
const KEY_VERSION = 'nis-2'

/**
 * The cache key of one variant. Next's `getCacheKey` hashes version, href, width, quality and type
 * back to back, so `/a.png?v=120` at w=48 and `/a.png?v=1` at w=2048 share a key and one request
 * poisons the other. Here every part is delimited (a JSON array), and the Next line is included
 * because the bytes depend on it (its sharp settings and quality rules).
 */
export function cacheKey(href: string, width: number, quality: number, mimeType: string, major: NextMajor): string {
  return hashBase64url(JSON.stringify([KEY_VERSION, major, href, width, quality, mimeType]))
}
