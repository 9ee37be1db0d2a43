import { ImageError } from '../errors.js'
import { PLACEHOLDER_PATH, PLACEHOLDER_TYPE, type PurgedEntry, type PurgeSelector, type Variant } from './types.js'

/** What a caller asks to purge: some sources, a prefix, or everything (exactly one of them). */
export interface PurgeRequest {
  sources?: string[]
  prefix?: string
  all?: boolean
}

export interface PurgeResult {
  /** Variants removed (every width, quality and format of the selected sources). */
  removed: number
  variants: Variant[]
  /**
   * The optimizer URLs (`{basePath}/_next/image?url=…&w=…&q=…`) that were cached, once each (the
   * formats of one URL share it): what a CDN in front must purge next.
   */
  urls: string[]
  /** Other processes (workers, replicas) that confirmed they dropped their in-process copies. */
  processes: number
}

const MAX_SOURCES = 10_000

/** Pure: a request → the selector, or a 400 that says what a purge takes. */
export function parsePurgeRequest(body: unknown): PurgeSelector {
  const usage = 'purge: expected exactly one of {"sources": ["/path", …]}, {"prefix": "/path/"} or {"all": true}'
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ImageError(400, usage)
  const { sources, prefix, all } = body as Record<string, unknown>
  const given = [sources !== undefined, prefix !== undefined, all !== undefined && all !== false].filter(Boolean).length
  if (given !== 1) throw new ImageError(400, usage)
  if (sources !== undefined) {
    if (!Array.isArray(sources) || sources.length === 0 || sources.length > MAX_SOURCES || !sources.every((s) => typeof s === 'string' && s.length > 0)) {
      throw new ImageError(400, `purge: "sources" must be 1 to ${MAX_SOURCES} non-empty strings`)
    }
    return { sources: [...new Set(sources as string[])] }
  }
  if (prefix !== undefined) {
    // An empty prefix would be a purge of all by accident.
    if (typeof prefix !== 'string' || prefix.length === 0) throw new ImageError(400, 'purge: "prefix" must be a non-empty string (use {"all": true} for everything)')
    return { prefix }
  }
  if (all !== true) throw new ImageError(400, usage)
  return { all: true }
}

/** Pure: the optimizer URL a variant was requested at (Next's loader spelling: url, w, q), or its placeholder's. */
export function optimizerUrl(variant: Variant, basePath = ''): string {
  if (variant.mimeType === PLACEHOLDER_TYPE) return `${PLACEHOLDER_PATH}?url=${encodeURIComponent(variant.href)}`
  return `${basePath}/_next/image?url=${encodeURIComponent(variant.href)}&w=${variant.width}&q=${variant.quality}`
}

/** Pure: what a purge removed → its result (URLs deduplicated, in a stable order). */
export function purgeResult(removed: PurgedEntry[], basePath: string, processes: number): PurgeResult {
  const variants = removed.flatMap((e) => (e.variant ? [e.variant] : []))
  const urls = [...new Set(variants.map((v) => optimizerUrl(v, basePath)))].sort()
  return { removed: removed.length, variants, urls, processes }
}
