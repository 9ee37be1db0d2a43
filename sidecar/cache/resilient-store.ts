import type { Logger } from 'pino'
import type { SyncLookup } from './memory-store.js'
import { isPurgeable, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector, type Variant } from './types.js'

/** Reads (get, ping) and writes (set, delete) fail apart: a full disk or a Redis at maxmemory still reads. */
export type StoreOp = 'read' | 'write'

export interface ResilienceOptions {
  /** How long a request waits on one store operation. */
  timeoutMs?: number
  /** How long a failing kind of operation is skipped before it is tried again. */
  backoffMs?: number
  /** How long `ping()` may wait (a first connection included). */
  pingTimeoutMs?: number
  /**
   * Timed-out writes still running beyond which new writes are dropped: a store that hangs must not
   * hold one image per request, nor replay them all when it answers again.
   */
  maxPendingWrites?: number
  /** Called on each transition of reads or writes between working (true) and failing (false). */
  onHealth?: (op: StoreOp, up: boolean) => void
}

class Health {
  downSince: number | undefined
  retryAt = 0
  /** The last failure was a timeout (a hung store): only the probe tries it again, never a request. */
  hung = false
  probe: NodeJS.Timeout | undefined
}

/**
 * What a write probe stores: a tiny entry under a key no variant can have (variant keys are
 * sha256 in base64url), kept for seconds.
 */
const PROBE_KEY = 'health-probe'
const PROBE_ENTRY: CacheEntry = { buffer: Buffer.alloc(1), contentType: 'application/octet-stream', maxAge: 1, expireAt: 0, etag: 'probe', upstreamEtag: 'probe' }

/**
 * Makes a store failure a cache miss instead of a failed request: every operation is bounded
 * by a timeout; reads and writes are tracked apart, each failure logged once per outage, and for
 * a short back-off the failing kind is skipped (never the other: reads that work are still served
 * while writes fail); then it is tried again and its recovery is logged.
 */
export class ResilientStore implements CacheStore, PurgeableStore, Partial<SyncLookup> {
  readonly name: string
  private readonly health: Record<StoreOp, Health> = { read: new Health(), write: new Health() }
  private readonly timeoutMs: number
  private readonly backoffMs: number
  private readonly pingTimeoutMs: number
  private readonly maxPendingWrites: number
  private lingeringWrites = 0
  private closed = false

  constructor(
    private readonly inner: CacheStore,
    private readonly log: Logger,
    private readonly options: ResilienceOptions = {},
  ) {
    this.name = inner.name
    this.timeoutMs = options.timeoutMs ?? 1000
    this.backoffMs = options.backoffMs ?? 1000
    this.pingTimeoutMs = options.pingTimeoutMs ?? 3000
    this.maxPendingWrites = options.maxPendingWrites ?? 8
    const lookup = inner as Partial<SyncLookup>
    if (typeof lookup.peek === 'function') this.peek = (key) => this.peekRead(lookup as SyncLookup, key)
  }

  /** The store's synchronous read (the SQLite store's), when it has one: see peekRead. */
  readonly peek?: (key: string) => CacheEntry | undefined

  /**
   * A synchronous read is a read like `get`'s: skipped while reads are down (undefined: the request
   * goes the full way, which answers a miss), its failure reported as theirs. No timeout: nothing
   * can interrupt a synchronous call, and one that returned has not hung.
   */
  private peekRead(inner: SyncLookup, key: string): CacheEntry | undefined {
    if (this.health.read.downSince !== undefined) return undefined
    try {
      return inner.peek(key)
    } catch (err) {
      this.report('read', err)
      return undefined
    }
  }

  /** Whether reads and writes both work: what a waiter for another replica's entry needs. */
  get available(): boolean {
    return this.up('read') && this.up('write')
  }

  up(op: StoreOp): boolean {
    return this.health[op].downSince === undefined
  }

  /** Writes that timed out and have not settled yet. */
  get pending(): number {
    return this.lingeringWrites
  }

  /**
   * While a kind of operation is down, requests skip it for the back-off; after a timeout (a hung store)
   * only its probe (probeUntilUp) tries again, so a hung store costs one request its timeout, not one
   * request per back-off. A read that timed out takes the writes down too: a store that does not answer a
   * read will not answer a write.
   */
  private async attempt<T>(op: StoreOp, run: () => Promise<T>, fallback: T, probe = false): Promise<T> {
    const health = this.health[op]
    if (health.downSince !== undefined && !probe && (health.hung || Date.now() < health.retryAt)) return fallback
    try {
      const result = await run()
      this.report(op, undefined)
      return result
    } catch (err) {
      this.report(op, err)
      if (op === 'read' && err instanceof StoreTimeout) this.report('write', err)
      return fallback
    }
  }

  private report(op: StoreOp, err: unknown): void {
    const health = this.health[op]
    if (err === undefined) {
      if (health.downSince === undefined) return
      this.log.warn({ store: this.name, op, downForMs: Date.now() - health.downSince }, `cache store ${op}s recovered`)
      health.downSince = undefined
      this.options.onHealth?.(op, true)
      return
    }
    health.retryAt = Date.now() + this.backoffMs
    health.hung = err instanceof StoreTimeout
    if (health.downSince !== undefined) return
    health.downSince = Date.now()
    const effect = op === 'read' ? 'serving without it' : 'serving without storing new images'
    this.log.error({ err, store: this.name, op }, `cache store ${op}s failed; ${effect} until it recovers`)
    this.options.onHealth?.(op, false)
    this.probeUntilUp(op)
  }

  /**
   * A failing kind of operation is tried by the store itself every back-off until it works: traffic
   * may never try it (a replica that only serves hits never writes), and its health must not stay
   * down after the store came back.
   */
  private probeUntilUp(op: StoreOp): void {
    const health = this.health[op]
    if (health.probe || this.closed) return
    health.probe = setTimeout(() => {
      health.probe = undefined
      if (this.up(op) || this.closed) return
      const probe = op === 'read' ? () => bounded(this.inner.ping(), this.timeoutMs) : () => bounded(this.inner.set(PROBE_KEY, { ...PROBE_ENTRY, expireAt: Date.now() + 10_000 }, 10_000), this.timeoutMs)
      void this.attempt(op, probe, undefined, true).finally(() => {
        if (!this.up(op)) this.probeUntilUp(op)
      })
    }, this.backoffMs)
    health.probe.unref()
  }

  /**
   * Runs a write; one that outlives its timeout is counted until it settles, and while too many
   * are, new writes are dropped (not queued) until the store keeps up again.
   */
  private write(run: () => Promise<void>): Promise<void> {
    return this.attempt(
      'write',
      async () => {
        if (this.lingeringWrites >= this.maxPendingWrites) throw new Error(`${this.lingeringWrites} timed-out cache writes have not finished`)
        let settled = false
        let lingering = false
        const promise = run()
        const done = () => {
          settled = true
          if (lingering) this.lingeringWrites--
        }
        promise.then(done, done)
        try {
          await bounded(promise, this.timeoutMs)
        } catch (err) {
          if (!settled) {
            lingering = true
            this.lingeringWrites++
          }
          throw err
        }
      },
      undefined,
    )
  }

  get(key: string): Promise<CacheEntry | undefined> {
    return this.attempt('read', () => bounded(this.inner.get(key), this.timeoutMs), undefined)
  }

  set(key: string, entry: CacheEntry, ttlMs: number, purgeMark?: string): Promise<void> {
    return this.write(() => this.inner.set(key, entry, ttlMs, purgeMark))
  }

  delete(key: string): Promise<void> {
    return this.write(() => this.inner.delete(key))
  }

  /** Not bounded nor swallowed: a purge that did not happen must say so. */
  purge(selector: PurgeSelector, candidates?: Map<string, Variant>): Promise<PurgedEntry[]> {
    if (!isPurgeable(this.inner)) return Promise.reject(new Error(`${this.name} cannot purge`))
    return this.inner.purge(selector, candidates)
  }

  // The purge log is bounded and sits behind the reads' back-off: while reads are down it is not asked (a
  // hung Redis would cost each request one more timeout), and a timeout counts as a failed read. A refusal
  // does not: a user without the rights to the log (an older Redis ACL) must not make the reads look down.
  purgeMark(): Promise<string | undefined> {
    return this.logRead((inner) => inner.purgeMark(), undefined)
  }

  private async logRead<T>(run: (inner: PurgeableStore) => Promise<T>, fallback: T): Promise<T> {
    const inner = this.inner
    if (!isPurgeable(inner) || !this.up('read')) return fallback
    try {
      return await bounded(run(inner), this.timeoutMs)
    } catch (err) {
      if (err instanceof StoreTimeout) this.report('read', err)
      return fallback
    }
  }

  /**
   * A store that cannot answer has not purged: it cannot have taken a purge either, and taking an
   * outage for a purge would rerun every job and keep nothing, not even in the hot tier.
   */
  purgedSince(mark: string | undefined, href: string): Promise<boolean> {
    return this.logRead((inner) => inner.purgedSince(mark, href), false)
  }

  /** Bounded, and reported like a read; rejects while the store does not answer (the start-up check). */
  async ping(): Promise<void> {
    try {
      await bounded(this.inner.ping(), this.pingTimeoutMs)
    } catch (err) {
      this.report('read', err)
      throw err
    }
    this.report('read', undefined)
  }

  close(): Promise<void> {
    this.closed = true
    for (const health of Object.values(this.health)) clearTimeout(health.probe)
    return this.inner.close()
  }
}

/** The store did not answer in time (as opposed to refusing). */
class StoreTimeout extends Error {}

function bounded<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  let check: NodeJS.Immediate | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      // The timeout is given after the loop's I/O phase: when the loop itself was blocked past `ms` (a long
      // GC, a synchronous stretch), an answer that arrived meanwhile is taken, not a timeout that only the
      // blocked loop caused (it took the store down for every request of the back-off).
      timer = setTimeout(() => (check = setImmediate(() => reject(new StoreTimeout(`cache store did not answer within ${ms} ms`)))), ms)
    }),
  ]).finally(() => {
    clearTimeout(timer)
    clearImmediate(check)
  })
}
