import { LRUCache } from 'lru-cache'
import { admits, fitSketch, sketchFor, type FrequencySketch } from './admission.js'
import { PurgeLog } from './purge-log.js'
import { MAX_TIMER_MS, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector, type StoreLimits } from './types.js'

/** A store that can answer from process memory at once: the hit path's lookup, no await, no copy. */
export interface SyncLookup {
  /** The entry as stored (the same object on every call), fresh or not; undefined when not held. */
  peek(key: string): CacheEntry | undefined
}

export interface MemoryStoreOptions {
  /**
   * Frequency-aware admission (TinyLFU, see admission.ts): once the budget is spent, a new key takes
   * the place of the least recently used ones only when it was asked for more often lately. For the
   * hot tier in front of a store (a rejected entry costs a store read); a store of its own keeps
   * plain LRU (a rejected entry would cost a transform).
   */
  admission?: boolean
}

/** What the store answered, for the bench and tests: plain counts, no labels, no timers. */
export interface MemoryStoreStats {
  /** Lookups (get, peek) that found the key, fresh or not. */
  hits: number
  /** Lookups that did not. */
  misses: number
  /** New keys admission kept out (the store was full of more frequently asked-for ones). */
  rejected: number
}

const sizeOf = (entry: CacheEntry) => Math.max(entry.buffer.byteLength, 1)

/** In-process store: least recently used entries go once the byte budget is spent (after admission, when on). */
export class MemoryStore implements CacheStore, PurgeableStore, SyncLookup {
  readonly name: string
  readonly stats: MemoryStoreStats = { hits: 0, misses: 0, rejected: 0 }
  private readonly lru: LRUCache<string, CacheEntry>
  private sketch?: FrequencySketch
  /** Source → its cached keys; an entry leaves it when the LRU lets it go (evicted, expired, deleted). */
  private readonly bySource = new Map<string, Set<string>>()
  private readonly log = new PurgeLog()

  constructor(
    private readonly limits: StoreLimits,
    name = 'memory://',
    options: MemoryStoreOptions = {},
  ) {
    this.name = name
    if (options.admission) this.sketch = sketchFor(limits.maxSize)
    this.lru = new LRUCache<string, CacheEntry>({
      maxSize: limits.maxSize,
      sizeCalculation: sizeOf,
      ttlAutopurge: true,
      // On 'set' the key stays (same key, same source): only its value changed.
      dispose: (entry, key, reason) => {
        if (reason !== 'set') this.unindex(entry, key)
      },
    })
  }

  private unindex(entry: CacheEntry, key: string): void {
    const href = entry.variant?.href
    if (href === undefined) return
    const keys = this.bySource.get(href)
    keys?.delete(key)
    if (keys?.size === 0) this.bySource.delete(href)
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    return this.lookup(key)
  }

  peek(key: string): CacheEntry | undefined {
    return this.lookup(key)
  }

  private lookup(key: string): CacheEntry | undefined {
    // get, not peek: a hit keeps the entry recent, as an awaited get would.
    const entry = this.lru.get(key)
    // Every ask counts, held or not: a key asked for often earns its place (see set).
    this.sketch?.increment(key)
    if (entry === undefined) this.stats.misses++
    else this.stats.hits++
    return entry
  }

  /** The entries a new one would push out, least recently used first, with their sizes. */
  private *victims(): Generator<readonly [string, number]> {
    for (const [key, entry] of this.lru.rentries() as Iterable<[string, CacheEntry]>) yield [key, sizeOf(entry)] as const
  }

  async set(key: string, entry: CacheEntry, ttlMs: number): Promise<void> {
    // Not stored: an older entry of the key must not outlive it (it would be served STALE, refreshed, and never replaced).
    // Past the whole budget too: lru-cache would refuse it and drop the old value without unindexing it.
    if (entry.buffer.byteLength > Math.min(this.limits.maxEntrySize, this.limits.maxSize)) {
      this.lru.delete(key)
      return
    }
    // A key held (fresh or stale) is always replaced: its old value must not outlive the new one.
    // A new key, once the budget is spent, only when asked for more often than what it would push out.
    if (this.sketch && this.lru.peek(key, { allowStale: true }) === undefined && !admits(this.sketch, key, this.lru.calculatedSize + sizeOf(entry) - this.limits.maxSize, this.victims())) {
      this.stats.rejected++
      return
    }
    this.lru.set(key, entry, { ttl: ttlMs > 0 ? Math.min(ttlMs, MAX_TIMER_MS) : undefined })
    if (this.sketch) this.sketch = fitSketch(this.sketch, this.lru.size)
    const href = entry.variant?.href
    if (href !== undefined && this.lru.has(key)) {
      let keys = this.bySource.get(href)
      if (!keys) this.bySource.set(href, (keys = new Set()))
      keys.add(key)
    }
  }

  async delete(key: string): Promise<void> {
    this.lru.delete(key)
  }

  async purge(selector: PurgeSelector): Promise<PurgedEntry[]> {
    this.log.record(selector)
    const removed: PurgedEntry[] = []
    const take = (key: string) => {
      const entry = this.lru.peek(key, { allowStale: true })
      if (entry === undefined) return
      removed.push({ key, ...(entry.variant ? { variant: entry.variant } : {}) })
      this.lru.delete(key)
    }
    if ('all' in selector) {
      for (const key of [...this.lru.keys()]) take(key)
    } else {
      const sources = 'sources' in selector ? selector.sources : [...this.bySource.keys()].filter((href) => href.startsWith(selector.prefix))
      for (const href of sources) for (const key of [...(this.bySource.get(href) ?? [])]) take(key)
    }
    return removed
  }

  async purgeMark(): Promise<string> {
    return this.log.mark()
  }

  async purgedSince(mark: string | undefined, href: string): Promise<boolean> {
    return this.log.purgedSince(mark, href)
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    this.lru.clear()
  }

  /** Bytes held (for tests and metrics). */
  get size(): number {
    return this.lru.calculatedSize
  }

  /** Sources indexed (tests: the index is bounded with the entries). */
  get indexedSources(): number {
    return this.bySource.size
  }
}
