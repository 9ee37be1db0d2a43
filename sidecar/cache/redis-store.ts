import KeyvRedis from '@keyv/redis'
import { createClient, createCluster, createSentinel, RESP_TYPES } from '@redis/client'
import type { Logger } from 'pino'
import { decodeEntry, encodeEntry } from './codec.js'
import { markTime, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector, type StoreLimits, type Variant } from './types.js'
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
  /** A command sender per master (one, except on a Cluster): what a SCAN must visit to see every key. */
  masters: () => Promise<Array<(args: string[]) => Promise<unknown>>>
}

function makeClient(target: RedisTarget, log: Logger): Connection {
  const onError = (err: unknown) => log.debug({ err }, 'redis client error')
  if (target.kind === 'single') {
    const client = createClient({ url: target.url, ...queueing, socket }).withTypeMapping(typeMapping)
    client.on('error', onError)
    return {
      client: client as unknown as Client,
      ping: () => client.ping(),
      masters: async () => [(args) => client.sendCommand(args)],
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
      masters: () => Promise.all(cluster.masters.map(async (master) => {
        const node = await cluster.nodeClient(master)
        return (args: string[]) => node.sendCommand(args)
      })),
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
    masters: async () => [(args) => sentinel.sendCommand(false, args)],
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
export class RedisStore implements CacheStore, PurgeableStore {
  readonly name: string
  readonly client: Client
  readonly subscribe: (channel: string, listener: PubSubListener) => Promise<() => Promise<void>>
  private readonly pingServer: () => Promise<unknown>
  /** Tells the client a command failed (the Cluster client then re-reads its slot map). */
  readonly onFailure: () => void
  private readonly adapter: KeyvRedis<Buffer>
  private readonly masters: Connection['masters']
  private connecting: Promise<unknown> | undefined
  /** The first connection was made; node-redis reconnects by itself afterwards. */
  private everConnected = false
  private indexRefusalLogged = false

  constructor(
    url: string,
    readonly prefix: string,
    private readonly limits: StoreLimits,
    private readonly log: Logger,
  ) {
    const target = parseRedisUrl(url)
    this.name = redactRedisUrl(url)
    const { client, ping, subscribe, onFailure, masters } = makeClient(target, log)
    this.client = client
    this.masters = masters
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

  async set(key: string, entry: CacheEntry, ttlMs: number, purgeMark?: string): Promise<void> {
    if (entry.buffer.byteLength > this.limits.maxEntrySize) return
    const keepMs = Math.max(Math.round(ttlMs), 1000)
    const { variant } = entry
    // A write can land after its caller stopped waiting (ResilientStore's timeout): it checks the purge log itself, from the job's mark.
    const mark = variant ? (purgeMark ?? (await this.purgeMark())) : undefined
    await this.run(() => this.adapter.set(this.k(key), encodeEntry(entry) as never, keepMs))
    if (variant) {
      // Its own command on the set's key alone: on a Cluster the set and the entry live in different slots.
      await this.run(() => this.client.eval(INDEX_ADD, { keys: [this.sourceKey(variant.href)], arguments: [JSON.stringify([key, variant.width, variant.quality, variant.mimeType]), String(keepMs)] })).catch((err: unknown) => {
        // The entry is stored: an ACL without the index's commands costs purges of this source, not the write.
        if (!/NOPERM|no permissions|can't run this command/i.test((err as Error)?.message ?? '')) throw err
        if (!this.indexRefusalLogged) this.log.warn({ err }, 'redis refused the purge index (SADD/PTTL/PEXPIRE): purges will not find entries; grant them to the ACL user (see the README)')
        this.indexRefusalLogged = true
      })
      if (await this.purgedSince(mark, variant.href)) await this.delete(key)
    }
  }

  /** The set of a source's variants: `<prefix>src:<href>`, so a prefix purge is a SCAN of a key pattern. */
  private sourceKey(href: string): string {
    return `${this.prefix}src:${href}`
  }

  private get purgeKeys(): string[] {
    // One hash tag: the counter and the log are in one slot, so one script updates both on a Cluster.
    return [`${this.prefix}{purge}seq`, `${this.prefix}{purge}log`]
  }

  private async keyed(script: string, key: string, args: string[] = []): Promise<unknown> {
    return this.run(() => this.client.eval(script, { keys: [key], arguments: args }))
  }

  /** Every key matching `pattern` on every master (SCAN, in pages). */
  private async scan(pattern: string): Promise<string[]> {
    const found: string[] = []
    for (const send of await this.run(() => this.masters())) {
      let cursor = '0'
      do {
        const [next, keys] = (await this.run(() => send(['SCAN', cursor, 'MATCH', pattern, 'COUNT', '1000']))) as [Buffer | string, Array<Buffer | string>]
        cursor = next.toString()
        for (const k of keys) found.push(k.toString())
      } while (cursor !== '0')
    }
    return found
  }

  /**
   * Logs the purge (INCR and LPUSH in one script), then removes each selected source's entries
   * through its set (one DEL per key: no cross-slot command). A prefix finds its sets by SCAN of
   * `<prefix>src:<P>*` on every master; only a purge of all scans for every key of the prefix.
   */
  async purge(selector: PurgeSelector): Promise<PurgedEntry[]> {
    const [kind, value] = 'all' in selector ? ['all', ''] : 'prefix' in selector ? ['prefix', selector.prefix] : ['sources', JSON.stringify(selector.sources)]
    await this.run(() => this.client.eval(LOG_PURGE, { keys: this.purgeKeys, arguments: [kind, value, String(PURGE_LOG_LENGTH), String(Date.now())] }))
    const srcPrefix = `${this.prefix}src:`
    const sets =
      'sources' in selector
        ? selector.sources.map((href) => this.sourceKey(href))
        : await this.scan(`${globEscape('all' in selector ? srcPrefix : srcPrefix + selector.prefix)}*`)
    const variants = new Map<string, Variant>()
    for (const set of sets) {
      const href = set.slice(srcPrefix.length)
      const members = (await this.keyed(MEMBERS, set)) as Array<Buffer | string>
      for (const member of members) {
        const [key, width, quality, mimeType] = JSON.parse(member.toString()) as [string, number, number, string]
        variants.set(key, { href, width, quality, mimeType })
      }
    }
    let keys = [...variants.keys()]
    if ('all' in selector) {
      const skip = [`${this.prefix}lock:`, srcPrefix, `${this.prefix}{purge}`]
      keys = (await this.scan(`${globEscape(this.prefix)}*`)).filter((k) => !skip.some((s) => k.startsWith(s))).map((k) => k.slice(this.prefix.length))
    }
    const removed: PurgedEntry[] = []
    for (const key of keys) {
      if (Number(await this.keyed(DEL, this.k(key))) > 0) removed.push({ key, ...(variants.has(key) ? { variant: variants.get(key)! } : {}) })
    }
    // The sets last: a purge that failed half-way can be run again and still finds the rest.
    for (const set of sets) await this.keyed(DEL, set)
    return removed
  }

  async purgeMark(): Promise<string> {
    const seq = await this.keyed(GET, this.purgeKeys[0]!)
    return seq ? seq.toString() : '0'
  }

  async purgedSince(mark: string | undefined, href: string): Promise<boolean> {
    if (mark === undefined) return true
    const from = markTime(mark)
    if (from === undefined && Number(await this.purgeMark()) <= Number(mark)) return false
    const [seq, ...log] = (await this.run(() => this.client.eval(READ_LOG, { keys: this.purgeKeys, arguments: [] }))) as Array<Buffer | string | null>
    const entries = log.map((e) => JSON.parse(e!.toString()) as { id: number; kind: string; value: string; at?: number })
    const covers = (e: { kind: string; value: string }) => e.kind === 'all' || (e.kind === 'prefix' && href.startsWith(e.value)) || (e.kind === 'sources' && (JSON.parse(e.value) as string[]).includes(href))
    if (from !== undefined) return entries.some((e) => (e.at ?? Infinity) >= from && covers(e))
    const last = Number(seq?.toString() ?? 0)
    const since = Number(mark)
    if (last <= since) return false
    // More purges than the log keeps since the mark: assume this source was one of them.
    if (entries.length === 0 || entries.at(-1)!.id > since + 1) return true
    return entries.some((e) => e.id > since && covers(e))
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

/** Purges the log keeps; a job older than that many purges treats its source as purged. */
const PURGE_LOG_LENGTH = 1000
// The set lives as long as its longest-kept entry.
const INDEX_ADD = `redis.call('sadd', KEYS[1], ARGV[1])
local ttl = redis.call('pttl', KEYS[1])
if ttl == -1 or ttl < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[1], ARGV[2]) end
return 1`
const LOG_PURGE = `local id = redis.call('incr', KEYS[1])
redis.call('lpush', KEYS[2], cjson.encode({ id = id, kind = ARGV[1], value = ARGV[2], at = tonumber(ARGV[4]) }))
redis.call('ltrim', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return id`
// The counter, then the log newest first.
const READ_LOG = `local out = { redis.call('get', KEYS[1]) or '0' }
for _, e in ipairs(redis.call('lrange', KEYS[2], 0, -1)) do out[#out + 1] = e end
return out`
const MEMBERS = `return redis.call('smembers', KEYS[1])`
const DEL = `return redis.call('del', KEYS[1])`
const GET = `return redis.call('get', KEYS[1])`

/** A literal for SCAN's MATCH: glob's special characters escaped. */
export function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`)
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
