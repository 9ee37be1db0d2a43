import { LRUCache } from 'lru-cache'
import { MAX_TIMER_MS, type CacheEntry, type CacheStore, type StoreLimits } from './types.js'

/** In-process store: least recently used entries go once the byte budget is spent. */
export class MemoryStore implements CacheStore {
  readonly name: string
  private readonly lru: LRUCache<string, CacheEntry>

  constructor(private readonly limits: StoreLimits, name = 'memory://') {
    this.name = name
    this.lru = new LRUCache<string, CacheEntry>({
      maxSize: limits.maxSize,
      sizeCalculation: (entry) => Math.max(entry.buffer.byteLength, 1),
      ttlAutopurge: true,
    })
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    return this.lru.get(key)
  }

  async set(key: string, entry: CacheEntry, ttlMs: number): Promise<void> {
    if (entry.buffer.byteLength > this.limits.maxEntrySize) return
    this.lru.set(key, entry, { ttl: ttlMs > 0 ? Math.min(ttlMs, MAX_TIMER_MS) : undefined })
  }

  async delete(key: string): Promise<void> {
    this.lru.delete(key)
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    this.lru.clear()
  }

  /** Bytes held (for tests and metrics). */
  get size(): number {
    return this.lru.calculatedSize
  }
}
