import { hashBase64url } from '../next/etag.js'
import type { NextMajor } from '../next/next-version.js'
import { CREDENTIAL_PARAMS, CREDENTIAL_WORDS } from '../runtime/credentials.js'
import { PLACEHOLDER_TYPE, type CandidateKeys, type Variant } from './types.js'

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
  const pattern = namesPattern(names)
  return (name) => pattern.test(name)
}

/** The names as one anchored pattern, `*` matching any run of characters. */
function namesPattern(names: string[], flags = ''): RegExp {
  const escape = (s: string) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')
  return new RegExp(`^(?:${names.map((n) => n.split('*').map(escape).join('.*')).join('|')})$`, flags)
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

/**
 * Pure: the credential-like parameters a --cache-key-ignore-params spec would leave out of the key,
 * each with the pattern that covers it (`X-Amz-*` → X-Amz-Signature, …); empty when it names only
 * harmless ones (`t`, `v`). Names are compared in any case, since origins differ in how strictly
 * they compare them.
 */
export function credentialParams(spec: string | string[] | undefined): Array<{ pattern: string; covers: string }> {
  const names = (Array.isArray(spec) ? spec : (spec ?? '').split(',')).map((n) => n.trim()).filter(Boolean)
  const found: Array<{ pattern: string; covers: string }> = []
  for (const pattern of names) {
    // In any case: origins differ in how strictly they compare names (`Key` and `key` may be the same).
    const matches = namesPattern([pattern], 'i')
    const covered = CREDENTIAL_PARAMS.find((name) => matches.test(name))
    if (covered !== undefined) found.push({ pattern, covers: covered })
    else if (CREDENTIAL_WORDS.test(pattern.replaceAll('*', ''))) found.push({ pattern, covers: pattern })
  }
  return found
}

/** Unreserved characters (RFC 3986 §2.3): their escapes and themselves are the same URI. */
const UNRESERVED = /^[A-Za-z0-9\-._~]$/

/**
 * Pure: the one spelling of a source that every equivalent spelling shares, for the purge index:
 * what the request path resolves a `url=` to (dot segments, `..`, the scheme's and host's case,
 * spaces and non-ASCII escaped, as `new URL`), with the escapes of unreserved characters decoded
 * (`%61` → `a`) and the others' hex in upper case, without a fragment (never fetched) or a lone `?`.
 * `/a.png#x`, `/./a.png?`, `/b/../%61.png` → `/a.png`; `HTTP://Host/a b.png` → `http://host/a%20b.png`.
 * Not a URL (a malformed one): as it is.
 */
export function canonicalSource(href: string): string {
  const relative = href.startsWith('/') && !href.startsWith('//')
  let url: URL
  try {
    url = relative ? new URL(href, 'http://n') : new URL(href)
  } catch {
    return href
  }
  url.hash = ''
  if (url.search === '') url.search = ''
  const spelled = relative ? url.pathname + url.search : url.href
  return spelled.replace(/%([0-9A-Fa-f]{2})/g, (escape, hex: string) => {
    const char = String.fromCharCode(parseInt(hex, 16))
    return UNRESERVED.test(char) ? char : escape.toUpperCase()
  })
}

/**
 * Pure: the href a variant is indexed by for purges: the keyed href (without ignored parameters)
 * in its canonical spelling, so a purge of a source finds the variants of every spelling of it.
 */
export function indexedHref(href: string, ignore: IgnoredParams | undefined): string {
  return canonicalSource(keyedHref(href, ignore))
}

/** The types a key names: the negotiated format (negotiateMimeType), '' when none was (the source's own type is served). */
const KEYED_TYPES = ['image/avif', 'image/webp', '']

/** The most keys a purge of sources computes to delete beyond the index (about 50 per source with Next's defaults). */
export const MAX_CANDIDATE_KEYS = 20_000

/**
 * Pure: every key a source may have been cached under, whatever an index says: each width of the
 * config at each allowed quality (75 alone when any quality is allowed: 100 would be 4,800 keys a
 * source) for each negotiated format, and its placeholder: about 50 keys a spelling with Next's defaults. A purge of sources removes these too (see PurgeableStore).
 */
export function candidateKeys(sources: string[], sizes: { widths: number[]; qualities: number[] | undefined }, major: NextMajor, ignore: IgnoredParams | undefined): CandidateKeys | undefined {
  const qualities = sizes.qualities ?? [75]
  // Each key is a sha256 and a Map entry, on the request path of the process that takes the purge: past
  // the cap (Next's schema allows 50 widths × 20 qualities) the purge relies on the index alone.
  if (sources.length * (sizes.widths.length * qualities.length * KEYED_TYPES.length + 1) > MAX_CANDIDATE_KEYS) return undefined
  const found = new Map<string, Variant>()
  for (const source of sources) {
    const href = keyedHref(source, ignore)
    const indexed = canonicalSource(href)
    for (const width of sizes.widths) for (const quality of qualities) for (const mimeType of KEYED_TYPES) found.set(cacheKey(href, width, quality, mimeType, major), { href: indexed, width, quality, mimeType })
    found.set(placeholderKey(href, major), { href: indexed, width: 0, quality: 0, mimeType: PLACEHOLDER_TYPE })
  }
  // Every key the sources can have only when the qualities are a known list (Next 16's default [75], or
  // images.qualities): Next 15 without it allows any quality, of which these cover 75.
  return Object.assign(found, { complete: sizes.qualities !== undefined })
}
