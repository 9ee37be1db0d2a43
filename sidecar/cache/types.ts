import type { UpstreamValidators } from '../upstream/http.js'
/** One cached image variant: what Next keeps in a cache file name plus the bytes. */
export interface CacheEntry {
  buffer: Buffer
  contentType: string
  /** The max-age (seconds) the response advertises; Next calls it `revalidate`. */
  maxAge: number
  /** Epoch ms after which the entry is stale. */
  expireAt: number
  etag: string
  upstreamEtag: string
  /** The upstream's own validators, for a conditional revalidation (If-None-Match / If-Modified-Since). */
  validators?: UpstreamValidators
  /** Epoch ms the source was last fetched or confirmed unchanged (see --revalidate-after). */
  checkedAt?: number
  /** Which request this is a variant of: the source's purge index, and the optimizer URL a CDN purge needs. */
  variant?: Variant
}

/** What one cache key stands for: a source (Next's `href`) at a width, quality and format. */
export interface Variant {
  href: string
  width: number
  quality: number
  mimeType: string
}

/**
 * A variant of this type is a source's placeholder (size and blur, beyond Next), requested at
 * PLACEHOLDER_PATH; it is indexed with the source's images, so a purge of the source removes it too.
 */
export const PLACEHOLDER_TYPE = 'application/json'
export const PLACEHOLDER_PATH = '/_sidecar/placeholder'

/** Which sources a purge removes: some exact sources, those starting with a prefix, or all. */
export type PurgeSelector = { sources: string[] } | { prefix: string } | { all: true }

/**
 * The keys a purge of sources may have stored under (see candidateKeys); `complete` when they are every
 * key it can have (the config allows a known set of qualities), so no store needs to look further.
 */
export type CandidateKeys = Map<string, Variant> & { readonly complete?: boolean }

/** A removed variant (without `variant` when the entry predates the index, in a purge of all). */
export interface PurgedEntry {
  key: string
  variant?: Variant
}

/**
 * Purge support of a store: removes through a source → keys index (never a scan of the entries,
 * except for a purge of all) and keeps a purge log, so work that started before a purge can tell,
 * when it stores, that its source was purged meanwhile (see ResponseCache).
 */
export interface PurgeableStore {
  /**
   * Records the purge in the log (before anything is removed), removes, and returns what it removed.
   * `candidates`: the keys a purge of sources may also have stored under (see candidateKeys), removed
   * too, so an entry the index lost (evicted, a crash between writes, written before the index) goes.
   */
  purge(selector: PurgeSelector, candidates?: Map<string, Variant>): Promise<PurgedEntry[]>
  /** The log's position now: an opaque token, undefined when the store cannot tell. */
  purgeMark(): Promise<string | undefined>
  /** Whether a purge logged after `mark` covers `href` (true when the log cannot tell: the safe answer). */
  purgedSince(mark: string | undefined, href: string): Promise<boolean>
}

/**
 * A mark by time, for a job whose store could not tell its log position when the job began: a purge
 * logged from that time on (less a margin for the clocks of other hosts) counts as since the mark.
 */
export const timeMark = (now = Date.now()) => `t:${now}`
export const CLOCK_MARGIN_MS = 5000
/** The time of a time mark, else undefined (a log position). */
export const markTime = (mark: string): number | undefined => (mark.startsWith('t:') ? Number(mark.slice(2)) - CLOCK_MARGIN_MS : undefined)

/**
 * The kind of a purge's second log record, written once its deletes are done (`done:sources` …): a
 * process that applied the first while they ran drops its hot copies of the selector again on it. It
 * is not a purge of its own: a job's check (purgedSince) never counts it.
 */
export const DONE = 'done:'

/** Purges read from a store's log: what to apply (`selectors`) and what to drop from the hot tier again (`completed`). */
export interface LoggedPurges {
  selectors: PurgeSelector[]
  completed: PurgeSelector[]
}

/** Pure: a log's records (kind and value, as both stores keep them) as LoggedPurges, in their order. */
export function loggedPurges(records: Array<{ kind: string; value: string }>): LoggedPurges {
  const out: LoggedPurges = { selectors: [], completed: [] }
  for (const { kind, value } of records) {
    const done = kind.startsWith(DONE)
    const base = done ? kind.slice(DONE.length) : kind
    const selector: PurgeSelector = base === 'all' ? { all: true } : base === 'prefix' ? { prefix: value } : { sources: JSON.parse(value) as string[] }
    ;(done ? out.completed : out.selectors).push(selector)
  }
  return out
}

export const isPurgeable = (store: object): store is PurgeableStore => typeof (store as Partial<PurgeableStore>).purge === 'function'

/** Pure: whether a selector covers a source. */
export function selects(selector: PurgeSelector, href: string): boolean {
  if ('all' in selector) return true
  if ('prefix' in selector) return href.startsWith(selector.prefix)
  return selector.sources.includes(href)
}

export type { UpstreamValidators }

/**
 * The storage a cache backend provides. Keep it this small: the response cache owns all
 * semantics (freshness, single-flight, stale-while-revalidate), a store only keeps bytes.
 */
export interface CacheStore {
  /** A human-readable name for logs and /readyz, e.g. `sqlite:///path/cache.sqlite`. */
  readonly name: string
  /** False while the store is known to be failing (see ResilientStore); undefined when it cannot tell. */
  readonly available?: boolean
  get(key: string): Promise<CacheEntry | undefined>
  /**
   * `ttlMs` is a hint for how long the entry is worth keeping at all. `purgeMark`: the purge log's
   * position when the entry's job began; a store that keeps the log removes the entry again when a
   * purge of its source was logged since (a write may land after its caller stopped waiting).
   */
  set(key: string, entry: CacheEntry, ttlMs: number, purgeMark?: string): Promise<void>
  delete(key: string): Promise<void>
  /** Resolves when the backend answers; rejects when it is unreachable. */
  ping(): Promise<void>
  close(): Promise<void>
}

/** Size limits shared by the stores that bound themselves. */
export interface StoreLimits {
  /** Total bytes the store may hold; least recently used entries are evicted beyond it. */
  maxSize: number
  /** An entry larger than this is served but not stored. */
  maxEntrySize: number
}

/**
 * The longest TTL an in-process LRU can time (Node timers stop at 2^31-1 ms; lru-cache adds a little, so about 23 days).
 * An immutable image (a max-age of ten years) is kept that long, then fetched again.
 */
export const MAX_TIMER_MS = 2_000_000_000
