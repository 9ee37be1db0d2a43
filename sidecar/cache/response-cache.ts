import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { Deadline, untilAborted } from '../runtime/deadline.js'
import { ImageError, MESSAGES } from '../errors.js'
import type { CacheResult } from '../next/headers.js'
import type { Coordinator, Lock } from '../runtime/coordinator.js'
import { traced, type TraceContext } from '../runtime/tracing.js'
import { isPurgeable, selects, timeMark, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector, type Variant } from './types.js'

/** What a producer returns: the entry without its expiry (the cache sets that). */
export type Produced = Omit<CacheEntry, 'expireAt'>
/** Produces an entry; `signal` aborts at the job's deadline, which the producer must honour. */
export type Producer = (previous: CacheEntry | undefined, signal: AbortSignal) => Promise<Produced>

/**
 * What this request's own read of the store found moments ago (the hit path's, which hands a miss or a
 * stale entry to the full path): used instead of reading again, so a slow store costs a miss one read,
 * not two.
 */
export interface StoreRead {
  entry: CacheEntry | undefined
}

export interface CachedResponse {
  entry: CacheEntry
  result: CacheResult
}

export interface ResponseCacheOptions {
  minimumCacheTTL: number
  /** The deadline of one miss or refresh, ms: waiting for another process's lock, then producing. */
  jobTimeoutMs: number
  log: Logger
  /** Cross-process single flight (Redis); without it, single flight is per process. */
  coordinator?: Coordinator
  /** How long one process may hold a key's lock: the longest a job may take, plus a margin (default job timeout + 5 s). */
  lockTtlMs?: number
  /** How often a waiter re-reads the store when no announcement arrives. */
  pollMs?: number
  /** Each answer's outcome, with the variant it was for (when given). */
  onResult?: (result: CacheResult, variant: Variant | undefined) => void
  /** Check a fresh entry's source (conditionally, in the background) once it is this old; undefined: never (Next). */
  revalidateAfterMs?: number
  /** Each --revalidate-after check's outcome: the source unchanged (a 304 or the same output), changed, or failed. */
  onCheck?: (outcome: 'unchanged' | 'changed' | 'failed') => void
}

/** Keys whose last check this process remembers, so a store that cannot record one does not let checks repeat. */
const CHECKS_REMEMBERED = 100_000

/** Times a job produces again because its source was purged while it ran, before it serves without storing. */
const MAX_PURGED_RETRIES = 2

/** One job in this process; `purged` when a purge of its source returned while it ran. */
interface Job {
  promise: Promise<CacheEntry>
  href: string | undefined
  purged: boolean
}

/** Keep stale entries this many times their freshness, so STALE can be served while refreshing. */
const RETENTION_FACTOR = 10
const MIN_RETENTION_MS = 24 * 60 * 60 * 1000

/**
 * Next's image ResponseCache over a CacheStore: concurrent requests for one key share one
 * producer call (all of them answer MISS) — across processes too when a coordinator is given —
 * a fresh entry is a HIT, a stale one is served at once as STALE while one background refresh
 * runs; a failed refresh keeps the old entry for Next's short 3–30 s.
 */
export class ResponseCache {
  private readonly inflight = new Map<string, Job>()
  private readonly purgeable: PurgeableStore | undefined
  private readonly refreshing = new Map<string, Promise<void>>()
  /** --revalidate-after: when this process last started a check of each key (success or failure). */
  private readonly lastCheck = new LRUCache<string, number>({ max: CHECKS_REMEMBERED })
  /** --revalidate-after: sources with a check in flight, so variants of one source do not check it at once. */
  private readonly checkingSources = new Set<string>()
  private readonly minimumCacheTTL: number
  private readonly log: Logger
  private readonly coordinator: Coordinator | undefined
  private readonly lockTtlMs: number
  private readonly pollMs: number

  constructor(
    private readonly store: CacheStore,
    private readonly options: ResponseCacheOptions,
  ) {
    this.minimumCacheTTL = options.minimumCacheTTL
    this.log = options.log
    this.coordinator = options.coordinator
    this.lockTtlMs = options.lockTtlMs ?? options.jobTimeoutMs + 5000
    this.pollMs = options.pollMs ?? 250
    this.purgeable = isPurgeable(store) ? store : undefined
  }

  /** The entry for `key`, producing it on a miss; `trace` is the request's, for its spans. */
  async get(key: string, produce: Producer, trace?: TraceContext, variant?: Variant, preread?: StoreRead): Promise<CachedResponse> {
    let response = await this.lookup(key, produce, trace, variant, preread)
    // A job this request waited for was overtaken by a purge of its source: its bytes may be the old ones.
    for (let tries = 0; response === 'purged' && tries < MAX_PURGED_RETRIES; tries++) response = await this.lookup(key, produce, trace, variant)
    if (response === 'purged') throw new ImageError(503, 'Service Unavailable', { cause: new Error(`the source of ${key} was purged repeatedly while it was produced`) })
    this.options.onResult?.(response.result, variant)
    return response
  }

  /**
   * Removes every cached variant the selector covers from the store (and its hot tier), and
   * makes this process's jobs of those sources in flight produce again instead of handing out
   * what they made. Other processes are told by the caller (see Sidecar.purge).
   */
  async purge(selector: PurgeSelector, candidates?: Map<string, Variant>): Promise<PurgedEntry[]> {
    if (!this.purgeable) throw new Error(`the cache store ${this.store.name} cannot purge`)
    const removed = await this.purgeable.purge(selector, candidates)
    this.forget(selector)
    return removed
  }

  /** What another process's purge asks of this one: its hot tier's copies and its jobs in flight. */
  async purgeLocal(selector: PurgeSelector): Promise<PurgedEntry[]> {
    const hot = this.store as CacheStore & { purgeHot?: (s: PurgeSelector) => Promise<PurgedEntry[]> }
    const removed = typeof hot.purgeHot === 'function' ? await hot.purgeHot(selector) : []
    this.forget(selector)
    return removed
  }

  /** This process's hot copies of `selector` only, its jobs in flight untouched: a purge's deletes finished. */
  async dropHot(selector: PurgeSelector): Promise<void> {
    const hot = this.store as CacheStore & { purgeHot?: (s: PurgeSelector) => Promise<PurgedEntry[]> }
    if (typeof hot.purgeHot === 'function') await hot.purgeHot(selector)
  }

  /** Whether the hot tier keeps copies (see TieredStore.keepHot): off while the purge log cannot be read. */
  keepHot(on: boolean): void {
    const hot = this.store as CacheStore & { keepHot?: (on: boolean) => void }
    hot.keepHot?.(on)
  }

  private forget(selector: PurgeSelector): void {
    for (const job of this.inflight.values()) if (job.href !== undefined && selects(selector, job.href)) job.purged = true
  }

  private async lookup(key: string, produce: Producer, trace: TraceContext | undefined, variant: Variant | undefined, preread?: StoreRead): Promise<CachedResponse | 'purged'> {
    const pending = this.inflight.get(key)
    if (pending) return this.waitForJob(pending, trace)

    // Before the read: a purge logged from then on may have removed what the read returns (see refresh).
    const readAt = Date.now()
    const cached = await traced(trace, 'cache lookup', { 'next_image_sidecar.store': this.store.name }, async (span) => {
      const entry = preread ? preread.entry : await this.read(key)
      span?.setAttribute('next_image_sidecar.cache_hit', entry !== undefined)
      return entry
    })
    if (cached) {
      if (Date.now() <= cached.expireAt) {
        if (this.dueForCheck(cached)) this.recheck(key, cached, produce, trace, readAt)
        return { entry: cached, result: 'HIT' }
      }
      this.refresh(key, cached, produce, trace, readAt)
      return { entry: cached, result: 'STALE' }
    }

    // Another request may have started the same miss while we read the store.
    const started = this.inflight.get(key)
    if (started) return this.waitForJob(started, trace)
    // Waiters on this promise are bounded by its deadline, which covers the lock wait and the job.
    const promise = Deadline.run(this.options.jobTimeoutMs, undefined, (signal) =>
      this.coordinator ? this.produceOnce(key, produce, signal, trace, variant) : this.produceAndStore(key, undefined, produce, signal, trace, variant),
    )
    const job: Job = { promise, href: variant?.href, purged: false }
    this.inflight.set(key, job)
    try {
      const entry = await promise
      return job.purged ? 'purged' : { entry, result: 'MISS' }
    } finally {
      if (this.inflight.get(key) === job) this.inflight.delete(key)
    }
  }

  /** An identical request's job in this process: this request waits for its result. */
  private async waitForJob(job: Job, trace: TraceContext | undefined): Promise<CachedResponse | 'purged'> {
    const entry = await traced(trace, 'lock wait', { 'next_image_sidecar.lock': 'process' }, () => job.promise)
    return job.purged ? 'purged' : { entry, result: 'MISS' }
  }

  /** Resolves when every background refresh started so far has finished (tests, shutdown). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.refreshing.values()])
  }

  /**
   * The cluster-wide miss: whoever takes the key's lock produces; the others wait for its
   * announcement (or poll), then read the entry. If the holder fails or dies, the lock frees
   * (on release or at its TTL) and the next waiter takes over. Waiting ends at the job's deadline
   * with Next's 504, as the holder's own job would.
   */
  private async produceOnce(key: string, produce: Producer, signal: AbortSignal, trace: TraceContext | undefined, variant: Variant | undefined): Promise<CacheEntry> {
    const mark = await this.purgeMark(variant)
    while (!signal.aborted) {
      const lock = await this.tryLock(key)
      if (lock === 'unavailable') break
      if (lock) {
        try {
          // The holder may have let go just as this request's own deadline passed.
          if (signal.aborted) break
          return await this.produceAndStore(key, undefined, produce, signal, trace, variant)
        } finally {
          await this.unlock(lock)
        }
      }
      const landed = await traced(trace, 'lock wait', { 'next_image_sidecar.lock': 'store' }, async () => {
        await untilAborted(this.coordinator!.waitFor(key, this.pollMs * 4), signal).catch(() => undefined)
        return this.read(key)
      })
      // Another process's entry of a source purged since this wait began may be the old bytes.
      if (landed && !(await this.purgedSince(mark, variant))) return landed
      // The store is failing (a failover, an outage): whatever the holder makes may never land
      // there, and its lock may outlive it. Serve around the store instead of waiting on it.
      if (this.store.available === false) break
    }
    if (signal.aborted) {
      throw new ImageError(504, MESSAGES.upstreamTimedOut, { cause: new Error(`another process held the lock of ${key} past the deadline`) })
    }
    return this.produceAndStore(key, undefined, produce, signal, trace, variant)
  }

  private async tryLock(key: string): Promise<Lock | undefined | 'unavailable'> {
    // Behind the store's back-off: a store known to be failing (down, or hung) is not asked for a lock.
    if (this.store.available === false) return 'unavailable'
    try {
      return await this.coordinator!.acquire(key, this.lockTtlMs)
    } catch (err) {
      this.log.debug({ err }, 'single-flight lock unavailable; producing locally')
      return 'unavailable'
    }
  }

  private async unlock(lock: Lock): Promise<void> {
    await this.coordinator!.release(lock).catch((err: unknown) => this.log.debug({ err }, 'could not release a single-flight lock'))
  }

  /**
   * `readAt`: when `previous` was read. Keeping it (a failed refresh) is checked against the purges logged
   * since then, not since the refresh's own mark: a purge logged between the read and the mark removed
   * `previous`, and writing it back would serve the purged bytes again.
   */
  private refresh(key: string, previous: CacheEntry, produce: Producer, trace: TraceContext | undefined, readAt: number): void {
    if (this.refreshing.has(key)) return
    const run = Deadline.run(this.options.jobTimeoutMs, undefined, async (signal) => {
      const lock = this.coordinator ? await this.tryLock(key) : 'unavailable'
      if (lock === undefined) return // another replica is refreshing this key
      const mark = await this.purgeMark(previous.variant)
      try {
        await this.produceAndStore(key, previous, produce, signal, trace, previous.variant)
      } catch (err) {
        this.log.warn({ err, key }, 'image revalidation failed; keeping the previous entry')
        // Next's retainPreviousCacheEntry: retry soon, but not in a hot loop. Not after a purge of its
        // source: the kept entry would put the purged bytes back (a source deleted, then purged).
        const maxAge = Math.min(Math.max(previous.maxAge || 3, 3), 30)
        if (!(await this.purgedSince(timeMark(readAt), previous.variant))) {
          await this.write(key, { ...previous, maxAge, expireAt: this.expireAt(maxAge) }, mark)
          if (await this.purgedSince(mark, previous.variant)) await this.store.delete(key).catch(() => undefined)
        }
      } finally {
        if (lock !== 'unavailable') await this.unlock(lock)
      }
    }).finally(() => this.refreshing.delete(key))
    this.refreshing.set(key, run)
  }

  /**
   * Produces and stores. A purge of the source while this ran wins: the purge is logged before it
   * removes anything, and the log is read after the write, so either the purge removes what was
   * written or this job sees the purge and removes it; then it produces again from the new source.
   */
  /** Whether a fresh entry's source is due for a check (--revalidate-after); never without the option. */
  dueForCheck(entry: CacheEntry): boolean {
    return this.options.revalidateAfterMs !== undefined && Date.now() - this.checkedAt(entry) >= this.options.revalidateAfterMs
  }

  /** When an entry's source was last seen: recorded, else derived from its expiry (entries from before the field). */
  private checkedAt(entry: CacheEntry): number {
    return entry.checkedAt ?? entry.expireAt - Math.max(entry.maxAge, this.minimumCacheTTL) * 1000
  }

  /**
   * --revalidate-after: the producer fetches conditionally (the entry's validators); a source that
   * did not change gives the same output, and the entry is kept with its expiry (only the check's
   * time moves); a changed one replaces it, as a miss would. A failed check keeps the entry and is
   * recorded like a successful one (in the entry and in this process), so an origin that fails is
   * asked once per interval, not once per request: traffic must not set the origin's load. One
   * check per source is in flight at a time; a variant whose source is being checked stays due and
   * is checked after it.
   */
  /** `readAt`: when `previous` was read (see refresh): keeping it is checked against the purges since. */
  private recheck(key: string, previous: CacheEntry, produce: Producer, trace: TraceContext | undefined, readAt: number): void {
    const interval = this.options.revalidateAfterMs
    if (interval === undefined || this.refreshing.has(key)) return
    const started = this.lastCheck.get(key)
    if (started !== undefined && Date.now() - started < interval) return
    const source = previous.variant?.href
    if (source !== undefined && this.checkingSources.has(source)) return
    if (source !== undefined) this.checkingSources.add(source)
    this.lastCheck.set(key, Date.now())
    const run = Deadline.run(this.options.jobTimeoutMs, undefined, async (signal) => {
      const lock = this.coordinator ? await this.tryLock(key) : 'unavailable'
      if (lock === undefined) return // another process is checking it
      const mark = await this.purgeMark(previous.variant)
      // The entry as it is, with the check's time: kept when the source did not change or the check failed.
      const keep = async () => {
        if (await this.purgedSince(timeMark(readAt), previous.variant)) return
        await this.write(key, { ...previous, checkedAt: Date.now() }, mark)
        if (await this.purgedSince(mark, previous.variant)) await this.store.delete(key).catch(() => undefined)
      }
      try {
        let produced: Produced
        try {
          produced = await produce(previous, signal)
        } catch (err) {
          this.options.onCheck?.('failed')
          this.log.warn({ err, key }, 'source check (--revalidate-after) failed; keeping the entry until the next interval')
          await keep()
          return
        }
        if (produced.etag === previous.etag) {
          this.options.onCheck?.('unchanged')
          await keep()
          return
        }
        this.options.onCheck?.('changed')
        const entry: CacheEntry = { ...produced, expireAt: this.expireAt(produced.maxAge), checkedAt: Date.now(), ...(previous.variant ? { variant: previous.variant } : {}) }
        if (await this.purgedSince(mark, previous.variant)) return
        await this.write(key, entry, mark)
        if (await this.purgedSince(mark, previous.variant)) await this.store.delete(key).catch(() => undefined)
      } catch (err) {
        this.log.warn({ err, key }, 'source check (--revalidate-after) could not record its result')
      } finally {
        if (lock !== 'unavailable') await this.unlock(lock)
      }
    }).finally(() => {
      this.refreshing.delete(key)
      if (source !== undefined) this.checkingSources.delete(source)
    })
    this.refreshing.set(key, run)
  }

  private async produceAndStore(key: string, previous: CacheEntry | undefined, produce: Producer, signal: AbortSignal, trace: TraceContext | undefined, variant: Variant | undefined): Promise<CacheEntry> {
    for (let tries = 0; ; tries++) {
      const mark = await this.purgeMark(variant)
      const produced = await produce(previous, signal)
      const entry: CacheEntry = { ...produced, expireAt: this.expireAt(produced.maxAge), checkedAt: Date.now(), ...(variant ? { variant } : {}) }
      const last = tries === MAX_PURGED_RETRIES
      if (!last && (await this.purgedSince(mark, variant))) {
        previous = undefined
        continue
      }
      await traced(trace, 'store', { 'next_image_sidecar.store': this.store.name, 'next_image_sidecar.bytes': entry.buffer.byteLength }, () => this.write(key, entry, mark))
      if (await this.purgedSince(mark, variant)) {
        await this.store.delete(key).catch((err: unknown) => this.log.error({ err, key }, 'could not remove an entry of a purged source'))
        if (!last) {
          previous = undefined
          continue
        }
      }
      return entry
    }
  }

  /** The store's purge log position before a job reads its source; undefined where nothing can be purged. */
  private async purgeMark(variant: Variant | undefined): Promise<string | undefined> {
    if (!variant || !this.purgeable) return undefined
    const now = Date.now()
    // The log did not answer in time (a slow or failing store): a mark by time still protects the job.
    return (await this.purgeable.purgeMark().catch(() => undefined)) ?? timeMark(now)
  }

  private async purgedSince(mark: string | undefined, variant: Variant | undefined): Promise<boolean> {
    if (mark === undefined || !variant || !this.purgeable) return false
    // A log that cannot answer (the store is down) is not a purge: taking it for one made every miss
    // run its job three times and dropped the result from the hot tier for the whole outage.
    return this.purgeable.purgedSince(mark, variant.href).catch(() => false)
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

  private async write(key: string, entry: CacheEntry, purgeMark?: string): Promise<void> {
    const freshFor = entry.expireAt - Date.now()
    try {
      // An empty body is not stored; the key's older entry goes, as a store's set does with one over its bounds.
      if (entry.buffer.byteLength === 0) return await this.store.delete(key)
      await this.store.set(key, entry, Math.max(freshFor * RETENTION_FACTOR, MIN_RETENTION_MS), purgeMark)
    } catch (err) {
      this.log.error({ err, store: this.store.name }, 'cache write failed; the image was served but not stored')
    }
  }
}

