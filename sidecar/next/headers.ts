import contentDisposition from 'content-disposition'
import fresh from 'fresh'
import type { IncomingHttpHeaders } from 'node:http'
import { extensionOf } from './image-types.js'

/**
 * Next's `getMaxAge`: `s-maxage` over `max-age`, quotes stripped, else 0; capped at
 * `maxDeltaSeconds` when the line caps it (16.5: 2^31, RFC 9111 §1.2.2; before, passed through).
 */
export function getMaxAge(cacheControl: string | null | undefined, maxDeltaSeconds?: number): number {
  if (!cacheControl) return 0
  const directives = new Map<string, string | undefined>()
  for (const directive of cacheControl.split(',')) {
    const [key = '', value] = directive.trim().split('=', 2)
    directives.set(key.toLowerCase(), value?.toLowerCase())
  }
  let age = directives.get('s-maxage') || directives.get('max-age') || ''
  if (age.startsWith('"') && age.endsWith('"')) age = age.slice(1, -1)
  const n = parseInt(age, 10)
  if (isNaN(n)) return 0
  return maxDeltaSeconds === undefined ? n : Math.min(n, maxDeltaSeconds)
}

/** `Cache-Control` of an image response: immutable for Next's static media, else max-age. */
export function cacheControlHeader(isStatic: boolean, maxAge: number): string {
  return isStatic ? 'public, max-age=315360000, immutable' : `public, max-age=${maxAge}, must-revalidate`
}

/**
 * Next's `getFileNameWithExtension`: the last path segment of the image URL up to its
 * first dot, with the extension of the type actually sent (`photo.final.png` → `photo.webp`).
 */
export function fileNameFor(href: string, contentType: string): string {
  const [withoutQuery = ''] = href.split('?', 1)
  const segment = withoutQuery.split('/').pop()
  const extension = extensionOf(contentType)
  if (!segment || !extension) return 'image.bin'
  const [name] = segment.split('.', 1)
  return `${name}.${extension}`
}

export function contentDispositionHeader(href: string, contentType: string, type: 'inline' | 'attachment'): string {
  return contentDisposition(fileNameFor(href, contentType), { type })
}

/** Whether a conditional request matches the entity: Next answers 304 exactly when `fresh` says so. */
export function isNotModified(requestHeaders: IncomingHttpHeaders, etag: string): boolean {
  return fresh(requestHeaders, { etag })
}

export type CacheResult = 'MISS' | 'HIT' | 'STALE'

export interface ImageResponse {
  href: string
  isStatic: boolean
  contentType: string
  etag: string
  maxAge: number
  cacheResult: CacheResult
  contentSecurityPolicy: string
  contentDispositionType: 'inline' | 'attachment'
  byteLength: number
}

/**
 * The headers of an image response, in Next's order. A 304 carries only the first three.
 */
export function imageResponseHeaders(r: ImageResponse, notModified: boolean): Array<[string, string]> {
  const headers: Array<[string, string]> = [
    ['Vary', 'Accept'],
    ['Cache-Control', cacheControlHeader(r.isStatic, r.maxAge)],
    ['ETag', r.etag],
  ]
  if (notModified) return headers
  headers.push(
    ['Content-Type', r.contentType],
    ['Content-Disposition', contentDispositionHeader(r.href, r.contentType, r.contentDispositionType)],
    ['Content-Security-Policy', r.contentSecurityPolicy],
    ['X-Nextjs-Cache', r.cacheResult],
    ['Content-Length', String(r.byteLength)],
  )
  return headers
}
