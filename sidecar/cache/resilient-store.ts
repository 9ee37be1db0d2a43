import type { Logger } from 'pino'
import { isPurgeable, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector } from './types.js'

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
export class ResilientStore implements CacheStore, PurgeableStore {
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

  private async attempt<T>(op: StoreOp, run: () => Promise<T>, fallback: T): Promise<T> {
    const health = this.health[op]
    if (health.downSince !== undefined && Date.now() < health.retryAt) return fallback
    try {
      const result = await run()
      this.report(op, undefined)
      return result
    } catch (err) {
      this.report(op, err)
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
      void this.attempt(op, probe, undefined).finally(() => {
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
  purge(selector: PurgeSelector): Promise<PurgedEntry[]> {
    if (!isPurgeable(this.inner)) return Promise.reject(new Error(`${this.name} cannot purge`))
    return this.inner.purge(selector)
  }

  // The purge log is bounded but kept out of the store's health: a user without the rights to the log
  // (an older Redis ACL) must not make the store's reads look down.
  purgeMark(): Promise<string | undefined> {
    const inner = this.inner
    return isPurgeable(inner) ? bounded(inner.purgeMark(), this.timeoutMs).catch(() => undefined) : Promise.resolve(undefined)
  }

  /**
   * A store that cannot answer has not purged: it cannot have taken a purge either, and taking an
   * outage for a purge would rerun every job and keep nothing, not even in the hot tier.
   */
  purgedSince(mark: string | undefined, href: string): Promise<boolean> {
    const inner = this.inner
    return isPurgeable(inner) ? bounded(inner.purgedSince(mark, href), this.timeoutMs).catch(() => false) : Promise.resolve(false)
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

function bounded<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`cache store did not answer within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}
