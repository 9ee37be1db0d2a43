import KeyvRedis from '@keyv/redis'
import { createClient, createCluster, createSentinel, RESP_TYPES } from '@redis/client'
import type { Logger } from 'pino'
import { decodeEntry, encodeEntry } from './codec.js'
import type { CacheEntry, CacheStore, StoreLimits } from './types.js'
import { parseRedisUrl, redactRedisUrl, type RedisTarget } from './redis-url.js'

type PubSubListener = (message: Buffer | string) => void

/** What the store and the coordinator use of a node-redis client, whichever the topology. */
interface Client {
  readonly isOpen: boolean
  /** Connected right now (a Cluster client has no such flag: its nodes' own queues fail fast). */
  readonly isReady?: boolean
  connect(): Promise<unknown>
  close(): Promise<void>
  destroy?(): void
  set(key: string, value: string, options: { condition: 'NX'; expiration: { type: 'PX'; value: number } }): Promise<unknown>
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>
  on(event: 'error', listener: (err: unknown) => void): unknown
}

const socket = {
  connectTimeout: 2000,
  reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 2000),
}
// Binary values come back as Buffers.
const typeMapping = { [RESP_TYPES.BLOB_STRING]: Buffer }
/**
 * No offline queue (a command sent while disconnected fails at once, so nothing written during an
 * outage is replayed when Redis returns) and a bounded queue while connected (a Redis that stopped
 * answering cannot collect one image per request).
 */
const queueing = { disableOfflineQueue: true, commandsQueueMaxLength: 1024 } as const

/** A command refused without being sent: the client is not connected. */
export class RedisOfflineError extends Error {
  constructor(store: string) {
    super(`redis is not connected (${store})`)
    this.name = 'RedisOfflineError'
  }
}

/**
 * A client for the target: one server, a Cluster (commands routed by key slot, the slot map
 * followed when it changes) or Sentinel (the current master, followed through failovers).
 * The offline queue is off everywhere: while disconnected, commands fail fast instead of
 * waiting, so a request never waits on the cache.
 */
interface Connection {
  client: Client
  ping: () => Promise<unknown>
  subscribe: (channel: string, listener: PubSubListener) => Promise<() => Promise<void>>
  /** Called when a command failed: a chance to follow a topology that changed. */
  onFailure?: () => void
}

function makeClient(target: RedisTarget, log: Logger): Connection {
  const onError = (err: unknown) => log.debug({ err }, 'redis client error')
  if (target.kind === 'single') {
    const client = createClient({ url: target.url, ...queueing, socket }).withTypeMapping(typeMapping)
    client.on('error', onError)
    return {
      client: client as unknown as Client,
      ping: () => client.ping(),
      // A connection in subscriber mode can send nothing else: pub/sub gets its own.
      subscribe: async (channel, listener) => {
        const subscriber = client.duplicate()
        subscriber.on('error', () => {})
        const close = async () => {
          if (!subscriber.isOpen) return
          // One still connecting has nothing to flush; close() would wait for its connection.
          if (!subscriber.isReady) subscriber.destroy()
          else await subscriber.close().catch(() => subscriber.destroy())
        }
        try {
          await bounded(subscriber.connect(), socket.connectTimeout)
          await bounded(subscriber.subscribe(channel, listener), socket.connectTimeout)
        } catch (err) {
          // A refused SUBSCRIBE (an ACL without the channel) must not leave its connection open.
          await close()
          throw err
        }
        return close
      },
    }
  }
  const auth = { ...(target.username ? { username: target.username } : {}), ...(target.password ? { password: target.password } : {}) }
  const nodeSocket = { ...socket, ...(target.tls ? { tls: true as const } : {}) }
  if (target.kind === 'cluster') {
    const cluster = createCluster({
      rootNodes: target.nodes.map(({ host, port }) => ({ socket: { host, port } })),
      defaults: { ...auth, ...queueing, socket: nodeSocket },
    }).withTypeMapping(typeMapping)
    cluster.on('error', onError)
    // node-redis re-reads the slot map only when a node answers MOVED or ASK; a master that died
    // answers nothing, so its slots would point at it forever after its replica took over. A failed
    // command therefore asks for a fresh map (at most once a second), through the client's own
    // rediscovery, which also moves the pub/sub connection off a dead node.
    const slots = (cluster as unknown as { _slots?: { rediscover(startWith: { options: object }): Promise<void> } })._slots
    let lastRefresh = 0
    const refreshSlots = () => {
      if (!slots || Date.now() - lastRefresh < 1000) return
      lastRefresh = Date.now()
      slots.rediscover({ options: { ...auth, socket: { ...nodeSocket, ...target.nodes[0]! } } }).catch((err: unknown) => log.debug({ err }, 'redis cluster: slot map refresh failed'))
    }
    return {
      client: cluster as unknown as Client,
      onFailure: refreshSlots,
      // PING names no key: any master answers for the cluster being reachable.
      ping: () => cluster.sendCommand(undefined, true, ['PING']),
      // Classic pub/sub is cluster-wide (every node relays PUBLISH), and the cluster client keeps
      // a subscriber connection of its own, moved to another node if its node fails.
      subscribe: async (channel, listener) => {
        await cluster.subscribe(channel, listener)
        return async () => {}
      },
    }
  }
  const sentinel = createSentinel({
    name: target.masterName,
    sentinelRootNodes: target.sentinels,
    nodeClientOptions: { ...auth, ...(target.database !== undefined ? { database: target.database } : {}), ...queueing, socket: nodeSocket },
    sentinelClientOptions: { socket },
  }).withTypeMapping(typeMapping)
  sentinel.on('error', onError)
  return {
    client: sentinel as unknown as Client,
    ping: () => sentinel.ping(),
    // The sentinel client's own pub/sub connection, re-subscribed on the new master after a failover.
    subscribe: async (channel, listener) => {
      await sentinel.subscribe(channel, listener)
      return async () => {}
    },
  }
}

/**
 * Redis or Valkey — one server (`redis://`, `rediss://`), a Cluster (`redis+cluster://`) or a
 * master behind Sentinel (`redis+sentinel://`) — through @keyv/redis: entries are binary values
 * under `<prefix><key>` with a TTL, so the server's own maxmemory policy can bound them. The
 * same client backs the cross-replica single-flight lock (see RedisCoordinator).
 */
export class RedisStore implements CacheStore {
  readonly name: string
  readonly client: Client
  readonly subscribe: (channel: string, listener: PubSubListener) => Promise<() => Promise<void>>
  private readonly pingServer: () => Promise<unknown>
  /** Tells the client a command failed (the Cluster client then re-reads its slot map). */
  readonly onFailure: () => void
  private readonly adapter: KeyvRedis<Buffer>
  private connecting: Promise<unknown> | undefined
  /** The first connection was made; node-redis reconnects by itself afterwards. */
  private everConnected = false

  constructor(
    url: string,
    readonly prefix: string,
    private readonly limits: StoreLimits,
    log: Logger,
  ) {
    const target = parseRedisUrl(url)
    this.name = redactRedisUrl(url)
    const { client, ping, subscribe, onFailure } = makeClient(target, log)
    this.client = client
    this.pingServer = ping
    this.subscribe = subscribe
    this.onFailure = onFailure ?? (() => {})
    this.adapter = new KeyvRedis<Buffer>(this.client as never, { namespace: undefined, throwOnErrors: true, throwOnConnectError: true, connectionTimeout: 2000 })
    this.adapter.on('error', () => {})
    void this.connected().catch(() => {})
  }

  /**
   * Resolves once the client is connected (the first connect only; node-redis reconnects by
   * itself afterwards). Commands sent before would fail, as the offline queue is off.
   */
  connected(): Promise<unknown> {
    this.connecting ??= this.client.connect().then(
      () => {
        this.everConnected = true
      },
      (err: unknown) => {
        this.connecting = undefined
        throw err
      },
    )
    return this.connecting
  }

  /** Whether a command sent now can reach Redis; starts a first connection if none is under way. */
  private get ready(): boolean {
    if (!this.everConnected) {
      void this.connected().catch(() => {})
      return false
    }
    return this.client.isReady ?? true
  }

  private k(key: string): string {
    return `${this.prefix}${key}`
  }

  /**
   * Runs a command if connected, else fails at once: a command never waits for a connection (it
   * would hold its arguments, an image for a SET, for as long as Redis is away, and fire late).
   * A failure is reported to the client before it is rethrown.
   */
  async run<T>(command: () => Promise<T>): Promise<T> {
    if (!this.ready) throw new RedisOfflineError(this.name)
    try {
      return await command()
    } catch (err) {
      this.onFailure()
      throw err
    }
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    const value = (await this.run(() => this.adapter.get(this.k(key)))) as unknown
    return Buffer.isBuffer(value) ? decodeEntry(value) : undefined
  }

  async set(key: string, entry: CacheEntry, ttlMs: number): Promise<void> {
    if (entry.buffer.byteLength > this.limits.maxEntrySize) return
    await this.run(() => this.adapter.set(this.k(key), encodeEntry(entry) as never, Math.max(Math.round(ttlMs), 1000)))
  }

  async delete(key: string): Promise<void> {
    await this.run(() => this.adapter.delete(this.k(key)))
  }

  /** Waits for the first connection (bounded by the connect timeout), then pings. */
  async ping(): Promise<void> {
    if (!this.everConnected) await bounded(this.connected(), socket.connectTimeout).catch(() => undefined)
    await this.run(() => this.pingServer())
  }

  async close(): Promise<void> {
    if (!this.client.isOpen) return
    // A client still trying to connect has nothing to flush: closing it would wait for a connection.
    if (this.client.isReady === false && this.client.destroy) this.client.destroy()
    else await this.client.close()
  }
}

/** Bounds a Redis round trip: a request may wait on the cache for a second at most. */
export function bounded<T>(promise: Promise<T>, ms = 1000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`redis did not answer within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

// Deletes the lock only if we still own it, then tells the waiters. One key per script (the
// lock): a Cluster routes the script by it, and a channel is not a key, so it is an argument.
// The announcement is best effort (pcall): an ACL that refuses the channel must not fail the
// release, or it would be retried until the lock expires; waiters then find the entry by polling.
