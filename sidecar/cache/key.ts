import { hashBase64url } from '../upstream.js'

/** Next's cache version; part of the key so our keys equal Next's for the same request. */
const CACHE_VERSION = '4'

/** Next's `getCacheKey`: sha256 of version, href, width, quality and negotiated type, back to back. */
export function cacheKey(href: string, width: number, quality: number, mimeType: string): string {
  return hashBase64url(CACHE_VERSION, href, String(width), String(quality), mimeType)
}
