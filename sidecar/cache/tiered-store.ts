import type { SyncLookup } from './memory-store.js'
import { isPurgeable, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector } from './types.js'

/**
 * A small in-process hot tier in front of a slower store: a hot image costs no round trip
 * (no SQLite read, no Redis GET). A hot entry past its freshness falls through to the store,
 * where another replica may already have put a fresher one.
 */
export class TieredStore implements CacheStore, PurgeableStore, Partial<SyncLookup> {
  readonly name: string
  /** Bumped by every purge: a store read that a purge overtook must not refill the hot tier. */
  private purges = 0

  constructor(
    private readonly hot: CacheStore,
    private readonly cold: CacheStore,
  ) {
    this.name = cold.name
    const lookup = hot as Partial<SyncLookup>
    if (lookup.peek) this.peek = (key) => lookup.peek!(key)
  }

  /** The hot tier's entry, when the hot tier can answer synchronously (see SyncLookup). */
  readonly peek?: (key: string) => CacheEntry | undefined

  get available(): boolean | undefined {
    return this.cold.available
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    const hot = await this.hot.get(key)
    if (hot && Date.now() <= hot.expireAt) return hot
    let cold: CacheEntry | undefined
    for (let tries = 0; ; tries++) {
      const purges = this.purges
      cold = await this.cold.get(key)
      if (purges === this.purges) break
      // A purge ran while the store answered: what it answered may be what the purge removed.
      if (tries === 2) return undefined
    }
    if (cold) await this.hot.set(key, cold, Math.max(cold.expireAt - Date.now(), 1000))
    return cold ?? hot
  }

  async set(key: string, entry: CacheEntry, ttlMs: number, purgeMark?: string): Promise<void> {
    await this.hot.set(key, entry, ttlMs)
    await this.cold.set(key, entry, ttlMs, purgeMark)
  }

  async delete(key: string): Promise<void> {
    await Promise.all([this.hot.delete(key), this.cold.delete(key)])
  }

  /** The store's purge (logged there first), then this process's hot tier. */
  async purge(selector: PurgeSelector): Promise<PurgedEntry[]> {
    this.purges++
    const cold = isPurgeable(this.cold) ? await this.cold.purge(selector) : []
    const hot = await this.purgeHot(selector)
    const seen = new Set(cold.map((e) => e.key))
    return [...cold, ...hot.filter((e) => !seen.has(e.key))]
  }

  /** This process's copies only: what another process's purge of the shared store asks of each one. */
  async purgeHot(selector: PurgeSelector): Promise<PurgedEntry[]> {
    this.purges++
    return isPurgeable(this.hot) ? this.hot.purge(selector) : []
  }

  purgeMark(): Promise<string | undefined> {
    return isPurgeable(this.cold) ? this.cold.purgeMark() : Promise.resolve(undefined)
  }

  purgedSince(mark: string | undefined, href: string): Promise<boolean> {
    return isPurgeable(this.cold) ? this.cold.purgedSince(mark, href) : Promise.resolve(false)
  }

  ping(): Promise<void> {
    return this.cold.ping()
  }

  async close(): Promise<void> {
    await Promise.all([this.hot.close(), this.cold.close()])
  }
}
