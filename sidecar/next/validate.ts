import { ImageError } from '../errors.js'
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
  const { localPatterns, remotePatterns, domains } = config.images
  const { url } = query
  let href: string
  let isAbsolute: boolean

  if (!url) fail('"url" parameter is required')
  if (Array.isArray(url)) fail('"url" parameter cannot be an array')
  const u = url as string
  if (u.length > 3072) fail('"url" parameter is too long')
  if (u.startsWith('//')) fail('"url" parameter cannot be a protocol-relative URL (//)')

  if (u.startsWith('/')) {
    href = u
    isAbsolute = false
    let pathname: string
    try {
      pathname = decodeURIComponent(new URL(u, 'http://n').pathname)
    } catch {
      // Next lets this URIError escape as a 500; it is the client's mistake, so 400.
      return fail('"url" parameter has a malformed percent-encoding')
    }
    if (/\/_next\/image($|\/)/.test(pathname)) fail('"url" parameter cannot be recursive')
    if (!hasLocalMatch(localPatterns, u)) fail('"url" parameter is not allowed')
  } else {
    let parsed: URL
    try {
      parsed = new URL(u)
    } catch {
      return fail('"url" parameter is invalid')
    }
    href = parsed.toString()
    isAbsolute = true
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') fail('"url" parameter is invalid')
    if (!hasRemoteMatch(domains, remotePatterns, parsed)) fail('"url" parameter is not allowed')
  }

  const { basePath } = config
  const isStatic = config.profile.staticMedia.some((prefix) => u.startsWith(`${basePath}${prefix}`))
  return { href: href!, isAbsolute: isAbsolute!, isStatic }
}
