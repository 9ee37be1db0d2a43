import { LRUCache } from 'lru-cache'
import { PurgeLog } from './purge-log.js'
import { MAX_TIMER_MS, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector, type StoreLimits } from './types.js'

/** A store that can answer from process memory at once: the hit path's lookup, no await, no copy. */
export interface SyncLookup {
  /** The entry as stored (the same object on every call), fresh or not; undefined when not held. */
  peek(key: string): CacheEntry | undefined
}

/** In-process store: least recently used entries go once the byte budget is spent. */
export class MemoryStore implements CacheStore, PurgeableStore, SyncLookup {
  readonly name: string
  private readonly lru: LRUCache<string, CacheEntry>
  /** Source → its cached keys; an entry leaves it when the LRU lets it go (evicted, expired, deleted). */
  private readonly bySource = new Map<string, Set<string>>()
  private readonly log = new PurgeLog()

  constructor(private readonly limits: StoreLimits, name = 'memory://') {
    this.name = name
    this.lru = new LRUCache<string, CacheEntry>({
      maxSize: limits.maxSize,
      sizeCalculation: (entry) => Math.max(entry.buffer.byteLength, 1),
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
    return this.lru.get(key)
  }

  peek(key: string): CacheEntry | undefined {
    // get, not peek: a hit keeps the entry recent, as an awaited get would.
    return this.lru.get(key)
  }

  async set(key: string, entry: CacheEntry, ttlMs: number): Promise<void> {
    if (entry.buffer.byteLength > this.limits.maxEntrySize) return
    this.lru.set(key, entry, { ttl: ttlMs > 0 ? Math.min(ttlMs, MAX_TIMER_MS) : undefined })
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
