import { randomUUID } from 'node:crypto'
import KeyvRedis from '@keyv/redis'
import { createClient, RESP_TYPES } from '@redis/client'
import type { Logger } from 'pino'
import { decodeEntry, encodeEntry } from './codec.js'
import type { CacheEntry, CacheStore, StoreLimits } from './types.js'
import type { Coordinator, Lock } from './coordinator.js'

function makeClient(url: string, log: Logger) {
  const client = createClient({
    url,
    // Fail fast while disconnected instead of queueing: a request must never wait on the cache.
    disableOfflineQueue: true,
    socket: { connectTimeout: 2000, reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 2000) },
  }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
  client.on('error', (err: unknown) => log.debug({ err }, 'redis client error'))
  return client
}
type Client = ReturnType<typeof makeClient>

/**
 * Redis or Valkey (`redis://`, `rediss://`) through @keyv/redis: entries are binary values
 * under `<prefix><key>` with a TTL, so the server's own maxmemory policy can bound them. The
 * same connection backs the cross-replica single-flight lock (see RedisCoordinator).
 */
export class RedisStore implements CacheStore {
  readonly name: string
  readonly client: Client
  private readonly adapter: KeyvRedis<Buffer>
  private connecting: Promise<unknown> | undefined

  constructor(
    url: string,
    readonly prefix: string,
    private readonly limits: StoreLimits,
    log: Logger,
  ) {
    const shown = new URL(url)
    shown.password = shown.password ? '***' : ''
    this.name = shown.href
    this.client = makeClient(url, log)
    this.adapter = new KeyvRedis<Buffer>(this.client as never, { namespace: undefined, throwOnErrors: true, throwOnConnectError: true, connectionTimeout: 2000 })
    this.adapter.on('error', () => {})
    void this.connected().catch(() => {})
  }

  /**
   * Resolves once the client is connected (the first connect only; node-redis reconnects by
   * itself afterwards). Commands sent before would fail, as the offline queue is off.
   */
  connected(): Promise<unknown> {
    this.connecting ??= this.client.connect().catch((err: unknown) => {
      this.connecting = undefined
      throw err
    })
    return this.connecting
  }

  private k(key: string): string {
    return `${this.prefix}${key}`
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    await this.connected()
    const value = (await this.adapter.get(this.k(key))) as unknown
    return Buffer.isBuffer(value) ? decodeEntry(value) : undefined
  }

  async set(key: string, entry: CacheEntry, ttlMs: number): Promise<void> {
    if (entry.buffer.byteLength > this.limits.maxEntrySize) return
    await this.connected()
    await this.adapter.set(this.k(key), encodeEntry(entry) as never, Math.max(Math.round(ttlMs), 1000))
  }

  async delete(key: string): Promise<void> {
    await this.connected()
    await this.adapter.delete(this.k(key))
  }

  async ping(): Promise<void> {
    await this.connected()
    await this.client.ping()
  }

  async close(): Promise<void> {
    if (this.client.isOpen) await this.client.close()
  }
}

/** Bounds a Redis round trip: a request may wait on the cache for a second at most. */
function bounded<T>(promise: Promise<T>, ms = 1000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`redis did not answer within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

// Deletes the lock only if we still own it, then tells the waiters.
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
redis.call('publish', KEYS[2], ARGV[2])
return 1`

/**
 * Cluster-wide single flight over Redis: `SET lock NX PX ttl` elects one replica per cache
 * key; it publishes the key when its entry has landed, and waiters wake on that message
 * (or on a short poll if pub/sub is unavailable). A replica that dies holding the lock
 * delays the others by at most the lock's TTL.
 */
export class RedisCoordinator implements Coordinator {
  private subscriber: Client | undefined
  private subscribing: Promise<void> | undefined
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
    const token = randomUUID()
    const ok = await bounded(
      this.store.connected().then(() => this.store.client.set(this.lockKey(key), token, { condition: 'NX', expiration: { type: 'PX', value: ttlMs } })),
    )
    return ok === null ? undefined : { key, token }
  }

  async release(lock: Lock): Promise<void> {
    await bounded(this.store.client.eval(RELEASE, { keys: [this.lockKey(lock.key), this.channel], arguments: [lock.token, lock.key] }))
  }

  async waitFor(key: string, maxMs: number): Promise<void> {
    await this.subscribe().catch((err: unknown) => this.log.debug({ err }, 'redis subscribe failed; polling'))
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.waiters.get(key)?.delete(done)
        resolve()
      }
      const timer = setTimeout(done, maxMs)
      let set = this.waiters.get(key)
      if (!set) this.waiters.set(key, (set = new Set()))
      set.add(done)
    })
  }

  private subscribe(): Promise<void> {
    this.subscribing ??= (async () => {
      const subscriber = this.store.client.duplicate()
      subscriber.on('error', () => {})
      await subscriber.connect()
      await subscriber.subscribe(this.channel, (message: Buffer | string) => {
        const key = message.toString()
        for (const wake of [...(this.waiters.get(key) ?? [])]) wake()
        this.waiters.delete(key)
      })
      this.subscriber = subscriber
    })().catch((err: unknown) => {
      this.subscribing = undefined
      throw err
    })
    return this.subscribing
  }

  async close(): Promise<void> {
    for (const set of this.waiters.values()) for (const wake of [...set]) wake()
    if (this.subscriber?.isOpen) await this.subscriber.close()
  }
}
