import type { Logger } from 'pino'
import type { CacheResult } from '../headers.js'
import type { CacheEntry, CacheStore } from './types.js'

/** What a producer returns: the entry without its expiry (the cache sets that). */
export type Produced = Omit<CacheEntry, 'expireAt'>
export type Producer = (previous: CacheEntry | undefined) => Promise<Produced>

export interface CachedResponse {
  entry: CacheEntry
  result: CacheResult
}

/** Keep stale entries this many times their freshness, so STALE can be served while refreshing. */
const RETENTION_FACTOR = 10
const MIN_RETENTION_MS = 24 * 60 * 60 * 1000

/**
 * Next's image ResponseCache over a CacheStore: concurrent requests for one key share one
 * producer call (all of them answer MISS), a fresh entry is a HIT, a stale one is served at
 * once as STALE while one background refresh runs; a failed refresh keeps the old entry for
 * Next's short 3–30 s. A failing store is logged and treated as a miss: it never fails a request.
 */
export class ResponseCache {
  private readonly inflight = new Map<string, Promise<CacheEntry>>()
  private readonly refreshing = new Map<string, Promise<void>>()

  constructor(
    private readonly store: CacheStore,
    private readonly minimumCacheTTL: number,
    private readonly log: Logger,
  ) {}

  async get(key: string, produce: Producer): Promise<CachedResponse> {
    const pending = this.inflight.get(key)
    if (pending) return { entry: await pending, result: 'MISS' }

    const cached = await this.read(key)
    if (cached) {
      if (Date.now() <= cached.expireAt) return { entry: cached, result: 'HIT' }
      this.refresh(key, cached, produce)
      return { entry: cached, result: 'STALE' }
    }

    // Another request may have started the same miss while we read the store.
    const started = this.inflight.get(key)
    if (started) return { entry: await started, result: 'MISS' }
    const promise = this.produceAndStore(key, undefined, produce)
    this.inflight.set(key, promise)
    try {
      return { entry: await promise, result: 'MISS' }
    } finally {
      this.inflight.delete(key)
    }
  }

  /** Resolves when every background refresh started so far has finished (tests, shutdown). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.refreshing.values()])
  }

  private refresh(key: string, previous: CacheEntry, produce: Producer): void {
    if (this.refreshing.has(key)) return
    const run = this.produceAndStore(key, previous, produce)
      .then(() => undefined)
      .catch(async (err: unknown) => {
        this.log.warn({ err, key }, 'image revalidation failed; keeping the previous entry')
        // Next's retainPreviousCacheEntry: retry soon, but not in a hot loop.
        const maxAge = Math.min(Math.max(previous.maxAge || 3, 3), 30)
        await this.write(key, { ...previous, maxAge, expireAt: this.expireAt(maxAge) })
      })
      .finally(() => this.refreshing.delete(key))
    this.refreshing.set(key, run)
  }

  private async produceAndStore(key: string, previous: CacheEntry | undefined, produce: Producer): Promise<CacheEntry> {
    const produced = await produce(previous)
    const entry: CacheEntry = { ...produced, expireAt: this.expireAt(produced.maxAge) }
    await this.write(key, entry)
    return entry
  }

  private expireAt(maxAge: number): number {
    return Date.now() + Math.max(maxAge, this.minimumCacheTTL) * 1000
  }

  private async read(key: string): Promise<CacheEntry | undefined> {
    try {
      return await this.store.get(key)
    } catch (err) {
      this.log.error({ err, store: this.store.name }, 'cache read failed; serving without the cache')
      return undefined
    }
  }

  private async write(key: string, entry: CacheEntry): Promise<void> {
    if (entry.buffer.byteLength === 0) return
    const freshFor = entry.expireAt - Date.now()
    try {
      await this.store.set(key, entry, Math.max(freshFor * RETENTION_FACTOR, MIN_RETENTION_MS))
    } catch (err) {
      this.log.error({ err, store: this.store.name }, 'cache write failed; the image was served but not stored')
    }
  }
}
