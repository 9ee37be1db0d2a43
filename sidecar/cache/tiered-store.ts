import type { CacheEntry, CacheStore } from './types.js'

/**
 * A small in-process hot tier in front of a slower store: a hot image costs no round trip
 * (no SQLite read, no Redis GET). A hot entry past its freshness falls through to the store,
 * where another replica may already have put a fresher one.
 */
export class TieredStore implements CacheStore {
  readonly name: string

  constructor(
    private readonly hot: CacheStore,
    private readonly cold: CacheStore,
  ) {
    this.name = cold.name
  }

  get available(): boolean | undefined {
    return this.cold.available
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    const hot = await this.hot.get(key)
    if (hot && Date.now() <= hot.expireAt) return hot
    const cold = await this.cold.get(key)
    if (cold) await this.hot.set(key, cold, Math.max(cold.expireAt - Date.now(), 1000))
    return cold ?? hot
  }

  async set(key: string, entry: CacheEntry, ttlMs: number): Promise<void> {
    await this.hot.set(key, entry, ttlMs)
    await this.cold.set(key, entry, ttlMs)
  }

  async delete(key: string): Promise<void> {
    await Promise.all([this.hot.delete(key), this.cold.delete(key)])
  }

  ping(): Promise<void> {
    return this.cold.ping()
  }

  async close(): Promise<void> {
    await Promise.all([this.hot.close(), this.cold.close()])
  }
}
