import { ImageError, MESSAGES } from '../errors.js'
import type { ResolvedNextConfig } from './images-config.js'
import { hasLocalMatch, hasRemoteMatch } from './match.js'

export type Query = Record<string, string | string[] | undefined>

export interface ImageParams {
  /** The upstream URL: verbatim for relative urls, normalised by `new URL` for absolute ones. */
  href: string
  isAbsolute: boolean
  /** Next's statically imported media, served with an immutable Cache-Control. */
  isStatic: boolean
  width: number
  quality: number
}

/** Parses a raw query string the way Next's router does (URLSearchParams; repeats become arrays). */
export function parseQuery(search: string): Query {
  const params = new URLSearchParams(search)
  const query: Query = {}
  for (const key of new Set(params.keys())) {
    const values = params.getAll(key)
    query[key] = values.length > 1 ? values : values[0]
  }
  return query
}

const fail = (message: string): never => {
  throw new ImageError(400, message)
}

/**
 * Next's `ImageOptimizerCache.validateParams` (next 16.4.6 and 15.5, production mode): the same checks
 * in the same order with the same 400 messages. The Accept negotiation is separate
 * (negotiate.ts) because it reads a header, not the query.
 */
export function validateParams(query: Query, config: ResolvedNextConfig): ImageParams {
  const source = validateSource(query, config)
  const { deviceSizes, imageSizes, qualities } = config.images
  const { w, q } = query

  if (!w) fail('"w" parameter (width) is required')
  if (Array.isArray(w)) fail('"w" parameter (width) cannot be an array')
  if (!/^[0-9]+$/.test(w as string)) fail('"w" parameter (width) must be an integer greater than 0')

  if (!q) fail('"q" parameter (quality) is required')
  if (Array.isArray(q)) fail('"q" parameter (quality) cannot be an array')
  if (!/^[0-9]+$/.test(q as string)) fail('"q" parameter (quality) must be an integer between 1 and 100')

  const width = parseInt(w as string, 10)
  if (width <= 0 || isNaN(width)) fail('"w" parameter (width) must be an integer greater than 0')
  if (!deviceSizes.includes(width) && !imageSizes.includes(width)) fail(`"w" parameter (width) of ${width} is not allowed`)

  const quality = parseInt(q as string, 10)
  if (isNaN(quality) || quality < 1 || quality > 100) fail('"q" parameter (quality) must be an integer between 1 and 100')
  if (qualities && !qualities.includes(quality)) fail(`"q" parameter (quality) of ${q as string} is not allowed`)

  return { ...source, width, quality }
}

/** Which source a request names: the `url` parameter's part of validateParams. */
export type SourceParams = Pick<ImageParams, 'href' | 'isAbsolute' | 'isStatic'>

/**
 * The `url` checks of Next's validateParams, in its order and with its messages: what the
 * optimizer and the placeholder endpoint (which takes no width or quality) both require of a source.
 */
export function validateSource(query: Query, config: ResolvedNextConfig): SourceParams {
  const { url } = query
  if (!url) fail('"url" parameter is required')
  if (Array.isArray(url)) fail('"url" parameter cannot be an array')
  const u = url as string
  const { href, isAbsolute } = validateUrlParam(u, config)
  const { basePath } = config
  // 16.5 tests the validated href, 16.4 and 15.5 the raw url: for a relative one they are the same
  // string, and an absolute one never starts with a path, so the lines agree on every answer.
  const isStatic = config.profile.staticMedia.some((prefix) => u.startsWith(`${basePath}${prefix}`))
  return { href, isAbsolute, isStatic }
}

/**
 * Next 16.5's `validateUrlParam(url, imagesConfig, isRedirect)` from the length check on (the `url`
 * query's presence and arity are checked by the caller). For a redirect's `Location` (`isRedirect`)
 * local and remote patterns are not applied, as in Next (a redirect may leave them); the rest is:
 * length, `//` refused, a recursive `/_next/image` refused, `new URL` must parse, http(s) only.
 */
export function validateUrlParam(u: string, config: ResolvedNextConfig, isRedirect = false): Pick<SourceParams, 'href' | 'isAbsolute'> {
  const { localPatterns, remotePatterns, domains } = config.images
  if (u.length > 3072) fail('"url" parameter is too long')
  if (u.startsWith('//')) fail('"url" parameter cannot be a protocol-relative URL (//)')

  if (u.startsWith('/')) {
    let pathname: string
    try {
      pathname = decodeURIComponent(new URL(u, 'http://n').pathname)
    } catch {
      // Next lets this URIError escape: from the query a 500, which is the client's mistake, so 400
      // here; from a redirect its internal fetch turns it into the upstream 500, as here.
      if (isRedirect) throw new ImageError(500, MESSAGES.upstreamInvalid, { cause: new Error(`malformed percent-encoding in Location ${JSON.stringify(u)}`) })
      return fail('"url" parameter has a malformed percent-encoding')
    }
    if (/\/_next\/image($|\/)/.test(pathname)) fail('"url" parameter cannot be recursive')
    if (!isRedirect && !hasLocalMatch(localPatterns, u)) fail('"url" parameter is not allowed')
    return { href: u, isAbsolute: false }
  }
  let parsed: URL
  try {
    parsed = new URL(u)
  } catch {
    return fail('"url" parameter is invalid')
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') fail('"url" parameter is invalid')
  if (!isRedirect && !hasRemoteMatch(domains, remotePatterns, parsed)) fail('"url" parameter is not allowed')
  return { href: parsed.toString(), isAbsolute: true }
}
