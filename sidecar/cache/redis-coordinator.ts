import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { Coordinator, Lock } from '../runtime/coordinator.js'
import { RedisOfflineError, RedisStore, bounded } from './redis-store.js'

const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
local published = redis.pcall('publish', ARGV[2], ARGV[3])
if type(published) == 'table' and published.err then return 0 end
return 1`

/** After Redis refused SUBSCRIBE (an ACL without the channel), waiters poll for this long before asking again. */
const SUBSCRIBE_RETRY_MS = 60_000

/** How often a lock whose release failed is released again. */
const RELEASE_RETRY_MS = 500

/**
 * Cluster-wide single flight over Redis: `SET lock NX PX ttl` elects one replica per cache
 * key; it publishes the key when its entry has landed, and waiters wake on that message
 * (or on a short poll if pub/sub is unavailable). A replica that dies holding the lock
 * delays the others by at most the lock's TTL. Each lock is one key and each script touches
 * only it, so on a Cluster every lock operation lands on the one node owning that key's slot
 * (no cross-slot commands); the announcement is classic pub/sub, which a Cluster relays to
 * every node (sharded pub/sub would need one channel per slot for what is one small message).
 */
export class RedisCoordinator implements Coordinator {
  private closed = false
  private releasing = 0
  private unsubscribe: (() => Promise<void>) | undefined
  private subscribing: Promise<void> | undefined
  private subscribeRetryAt = 0
  private refusalLogged = false
  private readonly waiters = new Map<string, Set<() => void>>()
  private readonly channel: string

  constructor(
    private readonly store: RedisStore,
    private readonly log: Logger,
  ) {
    this.channel = `${store.prefix}done`
  }

  private lockKey(key: string): string {
    return `${this.store.prefix}lock:${key}`
  }

  async acquire(key: string, ttlMs: number): Promise<Lock | undefined> {
    const lock: Lock = { key, token: randomUUID(), expiresAt: Date.now() + ttlMs }
    try {
      const ok = await bounded(this.store.run(() => this.store.client.set(this.lockKey(key), lock.token, { condition: 'NX', expiration: { type: 'PX', value: ttlMs } })))
      return ok === null ? undefined : lock
    } catch (err) {
      // The SET may still land after we stopped waiting for it: a lock nobody knows it holds.
      // Not when the store refused to send it (offline): then there is nothing to release, and a
      // release loop per miss during an outage would all fire at Redis when it comes back.
      if (!(err instanceof RedisOfflineError)) this.releaseLater(lock)
      throw err
    }
  }

  async release(lock: Lock): Promise<void> {
    try {
      await this.releaseNow(lock)
    } catch (err) {
      this.releaseLater(lock)
      throw err
    }
  }

  private releaseNow(lock: Lock): Promise<unknown> {
    return bounded(this.store.run(() => this.store.client.eval(RELEASE, { keys: [this.lockKey(lock.key)], arguments: [lock.token, this.channel, lock.key] })))
  }

  /**
   * A lock whose release did not get through (Redis unreachable, a failover) would make every other
   * replica wait for its key until their deadlines. Keep trying in the background until Redis answers
   * (the promoted replica, after a failover) or the lock expires anyway. The release only deletes
   * the lock if it still carries this token, so a late attempt never frees someone else's lock.
   */
  /** Releases still being retried in the background (see releaseLater). */
  get pendingReleases(): number {
    return this.releasing
  }

  private releaseLater(lock: Lock): void {
    this.releasing++
    const retry = async () => {
      while (!this.closed && Date.now() < (lock.expiresAt ?? 0)) {
        await sleep(RELEASE_RETRY_MS, undefined, { ref: false })
        if (this.closed) return
        try {
          await this.releaseNow(lock)
          this.log.info({ key: lock.key }, 'single-flight lock released after redis answered again')
          return
        } catch {
          // Still unreachable: try again until the lock expires by itself.
        }
      }
    }
    void retry().finally(() => this.releasing--)
  }

  async waitFor(key: string, maxMs: number): Promise<void> {
    // Not awaited: a subscription that is slow or refused must not delay the poll that backs it up.
    this.subscribe()
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer)
        const set = this.waiters.get(key)
        set?.delete(done)
        if (set?.size === 0) this.waiters.delete(key)
        resolve()
      }
      const timer = setTimeout(done, maxMs)
      let set = this.waiters.get(key)
      if (!set) this.waiters.set(key, (set = new Set()))
      set.add(done)
    })
  }

  /** Waiters waiting per key (tests: none is left behind once its wait ended). */
  get waiting(): number {
    return this.waiters.size
  }

  /** Subscribes once to the release channel; a refusal is remembered, so waiters poll instead of asking again each round. */
  private subscribe(): void {
    if (this.closed || this.subscribing || Date.now() < this.subscribeRetryAt) return
    this.subscribing = (async () => {
      await bounded(this.store.connected(), 2000)
      const unsubscribe = await bounded(
        this.store.subscribe(this.channel, (message: Buffer | string) => {
          const key = message.toString()
          for (const wake of [...(this.waiters.get(key) ?? [])]) wake()
          this.waiters.delete(key)
        }),
        5000,
      )
      if (this.closed) await unsubscribe()
      else this.unsubscribe = unsubscribe
    })().catch((err: unknown) => {
      this.subscribing = undefined
      const refused = /NOPERM|permission/i.test((err as Error)?.message ?? '')
      if (refused) {
        this.subscribeRetryAt = Date.now() + SUBSCRIBE_RETRY_MS
        if (!this.refusalLogged) this.log.warn({ err, channel: this.channel }, 'redis refused SUBSCRIBE on the release channel; waiters poll instead (grant the channel to the ACL user to avoid it)')
        this.refusalLogged = true
      } else {
        this.log.debug({ err }, 'redis subscribe failed; polling')
      }
    })
  }

  async close(): Promise<void> {
    this.closed = true
    for (const set of this.waiters.values()) for (const wake of [...set]) wake()
    await this.subscribing
    await this.unsubscribe?.()
  }
}
