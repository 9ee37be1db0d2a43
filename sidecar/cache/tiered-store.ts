import type { SyncLookup } from './memory-store.js'
import { isPurgeable, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector, type Variant } from './types.js'

/**
 * A small in-process hot tier in front of a slower store: a hot image costs no round trip
 * (no SQLite read, no Redis GET). A hot entry past its freshness falls through to the store,
 * where another replica may already have put a fresher one.
 */
export class TieredStore implements CacheStore, PurgeableStore, Partial<SyncLookup> {
  readonly name: string
  /** Bumped by every purge: a store read that a purge overtook must not refill the hot tier. */
  private purges = 0
  /** Off while this process cannot follow the purge log (see keepHot): every read and write goes to the store. */
  private hotOn = true

  constructor(
    private readonly hot: CacheStore,
    private readonly cold: CacheStore,
  ) {
    this.name = cold.name
    const lookup = hot as Partial<SyncLookup>
    const coldLookup = (cold as Partial<SyncLookup>).peek?.bind(cold)
    if (lookup.peek) this.peek = (key) => (this.hotOn ? (coldLookup ? this.peekBoth(lookup.peek!(key), coldLookup, key) : lookup.peek!(key)) : undefined)
  }

  /**
   * The hot tier's entry, when the hot tier can answer synchronously (see SyncLookup); none while it is off.
   * When the store can answer synchronously too (SQLite), a key the hot tier lacks, or holds stale, is read
   * from the store as `get` reads it, and kept hot.
   */
  readonly peek?: (key: string) => CacheEntry | undefined

  private peekBoth(hot: CacheEntry | undefined, coldLookup: (key: string) => CacheEntry | undefined, key: string): CacheEntry | undefined {
    if (hot && Date.now() <= hot.expireAt) return hot
    // Synchronous: no purge can run between this read and the hot tier's copy.
    const cold = coldLookup(key)
    if (cold && Date.now() <= cold.expireAt) void this.hot.set(key, cold, Math.max(cold.expireAt - Date.now(), 1000))
    return cold ?? hot
  }

  /**
   * Turns the hot tier off (emptied) or on again. Off while the process cannot read the purge log: a
   * purge made meanwhile reaches the store but not this process, so nothing this process produces or
   * reads may stay in memory where that purge cannot remove it.
   */
  keepHot(on: boolean): void {
    this.hotOn = on
  }

  get available(): boolean | undefined {
    return this.cold.available
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    if (!this.hotOn) return this.cold.get(key)
    const hot = await this.hot.get(key)
    if (hot && Date.now() <= hot.expireAt) return hot
    return this.readCold(key, hot)
  }

  /**
   * get, for a caller that has just peeked the hot tier for this request (the hit path): the hot tier
   * is not asked again, so an access counts once in its admission (see MemoryStore) and its hit ratio.
   */
  async getBelowHot(key: string): Promise<CacheEntry | undefined> {
    if (!this.hotOn) return this.cold.get(key)
    return this.readCold(key, undefined)
  }

  private async readCold(key: string, hot: CacheEntry | undefined): Promise<CacheEntry | undefined> {
    let cold: CacheEntry | undefined
    for (let tries = 0; ; tries++) {
      const purges = this.purges
      cold = await this.cold.get(key)
      if (purges === this.purges) break
      // A purge ran while the store answered: what it answered may be what the purge removed.
      if (tries === 2) return undefined
    }
    if (cold && this.hotOn) await this.hot.set(key, cold, Math.max(cold.expireAt - Date.now(), 1000))
    return cold ?? hot
  }

  async set(key: string, entry: CacheEntry, ttlMs: number, purgeMark?: string): Promise<void> {
    if (this.hotOn) await this.hot.set(key, entry, ttlMs)
    await this.cold.set(key, entry, ttlMs, purgeMark)
  }

  async delete(key: string): Promise<void> {
    await Promise.all([this.hot.delete(key), this.cold.delete(key)])
  }

  /** The store's purge (logged there first), then this process's hot tier. */
  async purge(selector: PurgeSelector, candidates?: Map<string, Variant>): Promise<PurgedEntry[]> {
    this.purges++
    const cold = isPurgeable(this.cold) ? await this.cold.purge(selector, candidates) : []
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
