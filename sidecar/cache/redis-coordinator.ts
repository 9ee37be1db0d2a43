import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { Coordinator, Lock, PurgeBroadcast, PurgeMessage, PurgeReach } from '../runtime/coordinator.js'
import { RedisOfflineError, RedisStore, bounded } from './redis-store.js'

const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
local published = redis.pcall('publish', ARGV[2], ARGV[3])
if type(published) == 'table' and published.err then return 0 end
return 1`

/** After Redis refused SUBSCRIBE (an ACL without the channel), waiters poll for this long before asking again. */
const SUBSCRIBE_RETRY_MS = 60_000

/** How soon a purge subscription that failed (Redis not answering yet) is tried again: doubling from first to last. */
const SUBSCRIBE_PURGES_RETRY_MS = { first: 1000, last: 10_000 }

/** How long a purge waits for the other replicas to say they dropped their copies. */
const PURGE_ACK_MS = 3000

const PUBLISH = `return redis.call('publish', ARGV[1], ARGV[2])`

/** Each replica subscribed to purges says so this often; one silent for MEMBER_TTL_MS is not waited for. */
const MEMBER_EVERY_MS = 20_000
const MEMBER_TTL_MS = 60_000
// The replicas listening for purges (a sorted set by last heard), pruned as it is read. PUBLISH's own
// count cannot stand in: on a Cluster it counts the subscribers of one node only.
// Timed by the server's clock, never a replica's: one whose clock is behind by more than the TTL would be
// pruned at once and never waited for (nor counted missed), one ahead would stay listed after it left.
// An ACL user without +time: the replica's clock, as before (the deploy docs grant +time).
// Returns the replicas' ids, so a purge waits for those and no answer stands in for another's; an ACL user
// without +zrange: their number, as before (the deploy docs grant +zrange).
const MEMBERS = `local t = redis.pcall('time')
local now = tonumber(ARGV[2])
if type(t) == 'table' and t[2] then now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end
if ARGV[1] ~= '' then redis.call('zadd', KEYS[1], now, ARGV[1]) end
redis.call('zremrangebyscore', KEYS[1], '-inf', now - ${MEMBER_TTL_MS})
redis.call('pexpire', KEYS[1], ${MEMBER_TTL_MS})
local ids = redis.pcall('zrange', KEYS[1], 0, -1)
if type(ids) == 'table' and not ids.err then return ids end
return redis.call('zcard', KEYS[1])`

type PurgeWire = { purge: PurgeMessage; id: string; from: string } | { ack: string; from: string }

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
export class RedisCoordinator implements Coordinator, PurgeBroadcast {
  private closed = false
  private releasing = 0
  private unsubscribe: (() => Promise<void>) | undefined
  private subscribing: Promise<void> | undefined
  private subscribeRetryAt = 0
  private refusalLogged = false
  private readonly waiters = new Map<string, Set<() => void>>()
  private readonly channel: string
  /** Purges and their acknowledgements, on a channel of their own (the release channel is per key). */
  private readonly purgeChannel: string
  private readonly instance = randomUUID()
  private purgeHandler: ((selector: PurgeMessage) => Promise<void>) | undefined
  private purgeSubscription: Promise<() => Promise<void>> | undefined
  private readonly acks = new Map<string, (from: string) => void>()
  private memberTimer: NodeJS.Timeout | undefined
  /** Purge subscriptions failed in a row (the first is logged as a warning, the recovery after them too). */
  private subscribeFailures = 0
  private subscribeRetry: NodeJS.Timeout | undefined
  /**
   * One listener for every attempt: a Cluster's or Sentinel's client keeps its listeners in a set, so an
   * attempt that timed out but landed later and the retry after it add one listener, not two.
   */
  private readonly onPurgeRaw = (raw: Buffer | string) => void this.onPurgeMessage(raw.toString())

  constructor(
    private readonly store: RedisStore,
    private readonly log: Logger,
  ) {
    this.channel = `${store.prefix}done`
    this.purgeChannel = `${store.prefix}purge`
  }

  onPurge(handler: (selector: PurgeMessage) => Promise<void>): void {
    this.purgeHandler = handler
    void this.subscribePurges().catch(() => {})
  }

  /**
   * Every replica subscribed to the purge channel (always, from its start) drops its hot copies
   * and answers; this waits for an answer from every replica listed as listening (see MEMBERS), or 3 s.
   */
  async announcePurge(selector: PurgeMessage): Promise<PurgeReach> {
    await this.subscribePurges()
    const id = randomUUID()
    // Counted per replica: on a Cluster or Sentinel a subscription that landed after its attempt timed out
    // shares the client with the next one, and a replica that answers twice must not stand in for one that did not.
    const answered = new Set<string>()
    let awaited: { ids: Set<string> } | { count: number } = { count: Infinity }
    const missing = () => ('ids' in awaited ? [...awaited.ids].filter((from) => !answered.has(from)).length : Math.max(0, awaited.count - answered.size))
    let finish: () => void = () => {}
    const all = new Promise<void>((resolve) => (finish = resolve))
    this.acks.set(id, (from) => {
      answered.add(from)
      if (missing() === 0) finish()
    })
    const timer = setTimeout(finish, PURGE_ACK_MS)
    try {
      const listed = await this.members(false)
      // By id where Redis gave them: an answer from a replica that is not listed (its listing lapsed while its
      // subscription held) confirms its own copies, not those of a listed replica that was cut off.
      awaited = Array.isArray(listed) ? { ids: new Set(listed.map(String).filter((from) => from !== this.instance)) } : { count: Number(listed) - 1 } // this process is listed too
      await this.store.run(() => this.store.client.eval(PUBLISH, { keys: [], arguments: [this.purgeChannel, JSON.stringify({ purge: selector, id, from: this.instance } satisfies PurgeWire)] }))
      if (missing() === 0) finish()
      await all
      const missed = missing()
      if (missed > 0) this.log.warn({ applied: answered.size, missed, selector }, 'purge: not every replica confirmed it dropped its in-process copies in time')
      // A replica listed as listening that did not answer (cut off from Redis, hung) still holds its copies
      // until it reads the purge log again (see followFeed): the purge says so instead of reporting success.
      return { applied: answered.size, missed }
    } finally {
      clearTimeout(timer)
      this.acks.delete(id)
    }
  }

  /** Lists this replica as listening (`join`) and prunes the silent ones; the number listed. */
  private members(join: boolean): Promise<unknown> {
    return bounded(this.store.run(() => this.store.client.eval(MEMBERS, { keys: [`${this.store.prefix}{purge}members`], arguments: [join ? this.instance : '', String(Date.now())] })))
  }

  private subscribePurges(): Promise<() => Promise<void>> {
    this.purgeSubscription ??= (async () => {
      await bounded(this.store.connected(), 2000)
      const unsubscribe = await bounded(this.store.subscribe(this.purgeChannel, this.onPurgeRaw), 5000)
      if (this.closed) {
        // Closed while this attempt was under way: close() has already taken this replica off the list.
        await unsubscribe()
        throw new Error('closed')
      }
      const join = () => this.members(true).catch((err: unknown) => this.log.debug({ err }, 'redis: could not list this replica as listening for purges'))
      await join()
      this.memberTimer = setInterval(join, MEMBER_EVERY_MS).unref()
      if (this.subscribeFailures > 0) this.log.info({ channel: this.purgeChannel, after: this.subscribeFailures }, 'redis: subscribed to the purge channel')
      this.subscribeFailures = 0
      return unsubscribe
    })().catch((err: unknown) => {
      this.purgeSubscription = undefined
      if (this.closed) throw err
      if (this.subscribeFailures++ === 0) this.log.warn({ err, channel: this.purgeChannel }, 'redis: could not subscribe to the purge channel; purges from other replicas will not reach this hot tier until it can (trying again)')
      // Tried again until it holds: a replica that is not subscribed is not listed, so no purge waits for it,
      // and one could report success while this hot tier still serves old bytes (until the next log read).
      // Doubling up to a cap: an ACL that refuses the channel costs a connection per try.
      const delay = Math.min(SUBSCRIBE_PURGES_RETRY_MS.first * 2 ** (this.subscribeFailures - 1), SUBSCRIBE_PURGES_RETRY_MS.last)
      if (this.purgeHandler && !this.closed) {
        clearTimeout(this.subscribeRetry)
        this.subscribeRetry = setTimeout(() => void (this.closed || this.purgeSubscription || this.subscribePurges().catch(() => {})), delay).unref()
      }
      throw err
    })
    return this.purgeSubscription
  }

  private async onPurgeMessage(raw: string): Promise<void> {
    let message: PurgeWire
    try {
      message = JSON.parse(raw) as PurgeWire
    } catch {
      return
    }
    if ('ack' in message) return void this.acks.get(message.ack)?.(message.from)
    if (message.from === this.instance) return
    try {
      await this.purgeHandler?.(message.purge)
    } catch (err) {
      this.log.error({ err }, 'purge from another replica could not be applied here')
    }
    await this.store
      .run(() => this.store.client.eval(PUBLISH, { keys: [], arguments: [this.purgeChannel, JSON.stringify({ ack: message.id, from: this.instance } satisfies PurgeWire)] }))
      .catch((err: unknown) => this.log.debug({ err }, 'purge acknowledgement not sent'))
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
    clearTimeout(this.subscribeRetry)
    for (const set of this.waiters.values()) for (const wake of [...set]) wake()
    await this.subscribing
    await this.unsubscribe?.()
    const purges = await this.purgeSubscription?.catch(() => undefined)
    // Cleared once no attempt can set it any more.
    clearInterval(this.memberTimer)
    if (purges) {
      await this.store.run(() => this.store.client.eval(`return redis.call('zrem', KEYS[1], ARGV[1])`, { keys: [`${this.store.prefix}{purge}members`], arguments: [this.instance] })).catch(() => {})
      await purges()
    }
  }
}
