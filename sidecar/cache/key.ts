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

/** The cache key of a source's placeholder (its size and blur, see image/placeholder.ts). */
export function placeholderKey(href: string, major: NextMajor): string {
  return hashBase64url(JSON.stringify([KEY_VERSION, major, href, 'placeholder']))
}

/** Query parameter names left out of absolute sources' keys (--cache-key-ignore-params). */
export type IgnoredParams = (name: string) => boolean

/**
 * Pure: `X-Amz-*,t` → a matcher of parameter names (exact, case-sensitive; `*` matches any run of
 * characters); undefined when nothing is named.
 */
export function ignoredParams(spec: string | string[] | undefined): IgnoredParams | undefined {
  const names = (Array.isArray(spec) ? spec : (spec ?? '').split(',')).map((n) => n.trim()).filter(Boolean)
  if (names.length === 0) return undefined
  const escape = (s: string) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')
  const pattern = new RegExp(`^(?:${names.map((n) => n.split('*').map(escape).join('.*')).join('|')})$`)
  return (name) => pattern.test(name)
}

/**
 * Pure: the href a variant is keyed (and indexed for purges) by: an absolute source without the
 * ignored query parameters; the fetch keeps using the full URL. The rest of the query is kept as it
 * was written (no re-encoding), in order. Relative sources are the app's own URLs and stay whole.
 */
export function keyedHref(href: string, ignore: IgnoredParams | undefined): string {
  if (!ignore || href.startsWith('/')) return href
  const q = href.indexOf('?')
  if (q < 0) return href
  const hash = href.indexOf('#', q)
  const query = href.slice(q + 1, hash < 0 ? undefined : hash)
  const kept = query.split('&').filter((part) => {
    const raw = part.slice(0, part.includes('=') ? part.indexOf('=') : undefined)
    let name = raw
    try {
      name = decodeURIComponent(raw.replace(/\+/g, ' '))
    } catch {
      // A malformed escape is compared as written.
    }
    return part === '' || !ignore(name)
  })
  const rest = kept.filter((p) => p !== '').join('&')
  return href.slice(0, q) + (rest ? `?${rest}` : '') + (hash < 0 ? '' : href.slice(hash))
}
