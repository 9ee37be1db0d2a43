import { ImageError } from '../errors.js'
import { canonicalSource, keyedHref, type IgnoredParams } from './key.js'
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
  /**
   * Other processes known to keep in-process copies (listed as listening, seen on the file lately) that
   * did not confirm within the bound: they drop them when they next read the purge log, not before.
   */
  missed: number
}

const MAX_SOURCES = 10_000

/**
 * Pure: the spellings a purge of `source` looks up: its canonical one, as the request path indexes a
 * `url=` (see canonicalSource; without the --cache-key-ignore-params parameters), and the argument as
 * written (entries indexed before sources were canonical).
 */
export function purgeSpellings(source: string, ignore?: IgnoredParams): string[] {
  return [...new Set([canonicalSource(keyedHref(source, ignore)), source])]
}

/**
 * Pure: a prefix in the spelling the request path indexes sources by (canonicalSource's escapes, case,
 * dot segments and default port), so `/img/café/`, `/img/caf%c3%a9/` and `/img/caf%C3%A9/` select the
 * same entries, and `https://Host:443/` those of `https://host/`. A trailing `/` is kept, and none is
 * added after a bare origin (`https://cdn.example` still selects `https://cdn.example:8080/…`).
 */
export function canonicalPrefix(prefix: string): string {
  const canonical = canonicalSource(prefix)
  const bareOrigin = /^https?:\/\/[^/?#]*$/i.test(prefix)
  return bareOrigin && canonical.endsWith('/') ? canonical.slice(0, -1) : canonical
}

/**
 * Pure: a request → the selector, or a 400 that says what a purge takes. Sources are normalised as
 * the request path normalises `url=` (`HTTP://Host/a b.png`, `/./a.png#x` find what was stored).
 */
export function parsePurgeRequest(body: unknown, ignore?: IgnoredParams): PurgeSelector {
  const usage = 'purge: expected exactly one of {"sources": ["/path", …]}, {"prefix": "/path/"} or {"all": true}'
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ImageError(400, usage)
  const { sources, prefix, all } = body as Record<string, unknown>
  const given = [sources !== undefined, prefix !== undefined, all !== undefined && all !== false].filter(Boolean).length
  if (given !== 1) throw new ImageError(400, usage)
  if (sources !== undefined) {
    if (!Array.isArray(sources) || sources.length === 0 || sources.length > MAX_SOURCES || !sources.every((s) => typeof s === 'string' && s.length > 0)) {
      throw new ImageError(400, `purge: "sources" must be 1 to ${MAX_SOURCES} non-empty strings`)
    }
    return { sources: [...new Set((sources as string[]).flatMap((source) => purgeSpellings(source, ignore)))] }
  }
  if (prefix !== undefined) {
    // An empty prefix would be a purge of all by accident.
    if (typeof prefix !== 'string' || prefix.length === 0) throw new ImageError(400, 'purge: "prefix" must be a non-empty string (use {"all": true} for everything)')
    // Nor one that covers every relative or every absolute source ("/", "http", "https://"): a
    // prefix names at least a path's first character or a URL's host.
    if (!/^\/[^/]|^https?:\/\/[^/]/i.test(prefix)) {
      throw new ImageError(400, `purge: "prefix" must start with a path (/images/) or a URL with its host (https://cdn.example/), received ${JSON.stringify(prefix.slice(0, 100))}; use {"all": true} for everything`)
    }
    return { prefix: canonicalPrefix(prefix) }
  }
  if (all !== true) throw new ImageError(400, usage)
  return { all: true }
}

/** Pure: the optimizer URL a variant was requested at (Next's loader spelling: url, w, q), or its placeholder's. */
export function optimizerUrl(variant: Variant, basePath = ''): string {
  return optimizerUrls(variant, basePath)[0]!
}

/**
 * Pure: the optimizer URLs a variant may have been requested at, for a CDN purge. The loader sends
 * `encodeURIComponent(src)`: a source written unescaped (`a b.png`, `café.png`, as a CMS gives it)
 * arrives as `a%20b.png`, one written escaped as `a%2520b.png`; both reach the one entry (its href
 * is escaped once), so both are listed, the unescaped spelling first.
 */
export function optimizerUrls(variant: Variant, basePath = ''): string[] {
  let unescaped: string | undefined
  try {
    unescaped = decodeURI(variant.href)
  } catch {
    // A malformed escape: only the href as it is.
  }
  const spellings = [...new Set([unescaped ?? variant.href, variant.href])]
  return spellings.map((href) =>
    variant.mimeType === PLACEHOLDER_TYPE
      ? `${PLACEHOLDER_PATH}?url=${encodeURIComponent(href)}`
      : `${basePath}/_next/image?url=${encodeURIComponent(href)}&w=${variant.width}&q=${variant.quality}`,
  )
}

/** Pure: what a purge removed → its result (URLs deduplicated, in a stable order). */
export function purgeResult(removed: PurgedEntry[], basePath: string, processes: number, missed = 0): PurgeResult {
  const variants = removed.flatMap((e) => (e.variant ? [e.variant] : []))
  const urls = [...new Set(variants.flatMap((v) => optimizerUrls(v, basePath)))].sort()
  return { removed: removed.length, variants, urls, processes, missed }
}
