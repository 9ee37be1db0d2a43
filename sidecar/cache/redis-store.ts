import KeyvRedis from '@keyv/redis'
import { createClient, createCluster, createSentinel, RESP_TYPES } from '@redis/client'
import type { Logger } from 'pino'
import { decodeMeta, encodeEntry, StoredForms } from './codec.js'
import { OwnRecords } from './purge-log.js'
import { DONE, loggedPurges, markTime, type CandidateKeys, type LoggedPurges, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector, type StoreLimits, type Variant } from './types.js'
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
  /** A binary value as a Buffer (typeMapping), null when there is none. */
  get(key: string): Promise<unknown>
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
  /** Purges this process logged: applied here when made, not replayed by purgesAfter. */
  private readonly own = new OwnRecords()
  /** Each key's stored form, parsed once (see StoredForms). */
  private readonly forms = new StoredForms()

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
    this.firstConnect = this.connected()
    this.firstConnect.catch(() => {})
  }

  /** The first connection attempt, made at construction, and the one wait for it (see run). */
  private readonly firstConnect: Promise<unknown>
  private firstWait: Promise<unknown> | undefined

  /**
   * Resolves once the client is connected (the first connect only; node-redis reconnects by
   * itself afterwards). Commands sent before would fail, as the offline queue is off.
   */
  connected(): Promise<unknown> {
    this.connecting ??= this.client.connect().then(
      () => {
        this.everConnected = true
        void this.checkEvictionPolicy()
      },
      (err: unknown) => {
        this.connecting = undefined
        throw err
      },
    )
    return this.connecting
  }

  /**
   * Says at start when the server evicts keys under memory pressure: a purge of sources or of all stays
   * final under any policy (candidate keys, a scan), a prefix purge finds sources through their sets, which
   * an eviction may have taken. INFO refused (an ACL) is not worth a line.
   */
  private async checkEvictionPolicy(): Promise<void> {
    const policy = await this.evictionPolicy()
    if (policy) this.log.info({ store: this.name, maxmemoryPolicy: policy }, `redis evicts keys under memory pressure (maxmemory-policy ${policy}): an index set may go before its entries, so a --prefix purge also reads the headers of every entry of the prefix (a scan, as --all does)`)
  }

  /**
   * The server's eviction policy when it evicts (maxmemory set, a policy other than noeviction), else
   * undefined; a server that does not say (INFO refused by an ACL) is taken as evicting (the safe answer).
   * On a Cluster, every master is asked.
   */
  private async evictionPolicy(): Promise<string | undefined> {
    try {
      for (const send of await this.masters()) {
        const info = String(await bounded(send(['INFO', 'memory']), 2000))
        const policy = /maxmemory_policy:(\S+)/.exec(info)?.[1]
        const max = Number(/maxmemory:(\d+)/.exec(info)?.[1] ?? 0)
        if (!policy) return 'unknown'
        if (policy !== 'noeviction' && max > 0) return policy
      }
      return undefined
    } catch {
      return 'unknown'
    }
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
    // Except the store's first connection, still being made when the process starts serving: commands then
    // wait for it, once, for FIRST_CONNECT_WAIT_MS at most (a Redis down at start is not waited for again).
    // Failed at once, the first requests took Redis for down and skipped it for the back-off: each a transform.
    if (!this.everConnected) await (this.firstWait ??= bounded(this.firstConnect, FIRST_CONNECT_WAIT_MS).catch(() => undefined))
    if (!this.ready) throw new RedisOfflineError(this.name)
    try {
      return await command()
    } catch (err) {
      this.onFailure()
      throw err
    }
  }

  /** One GET (the client's own, not through the keyv adapter's promise layers); the stored form parsed once (StoredForms). */
  async get(key: string): Promise<CacheEntry | undefined> {
    const value = await this.run(() => this.client.get(this.k(key)))
    return Buffer.isBuffer(value) ? this.forms.decode(key, value) : undefined
  }

  async set(key: string, entry: CacheEntry, ttlMs: number, purgeMark?: string): Promise<void> {
    // Not stored: an older entry of the key must not outlive it (served STALE and never replaced).
    if (entry.buffer.byteLength > this.limits.maxEntrySize) return this.delete(key)
    const keepMs = Math.max(Math.round(ttlMs), 1000)
    const { variant } = entry
    // A write can land after its caller stopped waiting (ResilientStore's timeout): it checks the purge log itself, from the job's mark.
    const mark = variant ? (purgeMark ?? (await this.purgeMark())) : undefined
    if (variant) {
      // The index first, then the entry: a process killed between the two leaves a member whose key is not
      // there (a purge's DEL of it costs nothing), never an entry no prefix purge can find. Its own command
      // on the set's key alone: on a Cluster the set and the entry live in different slots.
      await this.run(() => this.client.eval(INDEX_ADD, { keys: [this.sourceKey(variant.href)], arguments: [JSON.stringify([key, variant.width, variant.quality, variant.mimeType]), String(keepMs)] })).catch((err: unknown) => {
        // The entry is stored: an ACL without the index's commands costs purges of this source, not the write.
        if (!/NOPERM|no permissions|can't run this command/i.test((err as Error)?.message ?? '')) throw err
        if (!this.indexRefusalLogged) this.log.warn({ err }, 'redis refused the purge index (SADD/PTTL/PEXPIRE): purges will not find entries; grant them to the ACL user (see the README)')
        this.indexRefusalLogged = true
      })
    }
    await this.run(() => this.adapter.set(this.k(key), encodeEntry(entry) as never, keepMs))
    if (variant && (await this.purgedSince(mark, variant.href))) await this.delete(key)
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
    await this.scanPages(pattern, (keys) => void found.push(...keys))
    return found
  }

  /** Each page of the keys matching `pattern` on every master, as SCAN returns it (nothing held beyond a page). */
  private async scanPages(pattern: string, onPage: (keys: string[]) => void | Promise<void>): Promise<void> {
    for (const send of await this.run(() => this.masters())) {
      let cursor = '0'
      do {
        const [next, keys] = (await this.run(() => send(['SCAN', cursor, 'MATCH', pattern, 'COUNT', '1000']))) as [Buffer | string, Array<Buffer | string>]
        cursor = next.toString()
        await onPage(keys.map((k) => k.toString()))
      } while (cursor !== '0')
    }
  }

  /**
   * Logs the purge (INCR and LPUSH in one script), then removes each selected source's entries
   * through its set (one DEL per key: no cross-slot command). A prefix finds its sets by SCAN of
   * `<prefix>src:<P>*` on every master; only a purge of all scans for every key of the prefix.
   */
  async purge(selector: PurgeSelector, candidates?: Map<string, Variant>): Promise<PurgedEntry[]> {
    const [kind, value] = 'all' in selector ? ['all', ''] : 'prefix' in selector ? ['prefix', selector.prefix] : ['sources', JSON.stringify(selector.sources)]
    const log = async (as = '') => this.own.add(Number(await this.run(() => this.client.eval(LOG_PURGE, { keys: this.purgeKeys, arguments: [as + kind, value, String(PURGE_LOG_LENGTH), String(Date.now())] }))))
    let removed: PurgedEntry[]
    try {
      await log()
      removed = await this.remove(selector, candidates)
    } catch (err) {
      // Redis full under noeviction refuses the log's INCR and LPUSH, never a DEL: deleting first frees the
      // memory the log needs; then it is logged, and removed once more for what was written in between.
      if (!/\bOOM\b/.test((err as Error)?.message ?? '')) throw err
      const first = await this.remove(selector, candidates)
      await log()
      const again = await this.remove(selector, candidates)
      const seen = new Set(first.map((e) => e.key))
      removed = [...first, ...again.filter((e) => !seen.has(e.key))]
    }
    // Logged again once the deletes are done: a replica that applied the first record while they ran may
    // have refilled its hot tier from a key not deleted yet, and drops those copies on this one.
    await log(DONE)
    return removed
  }

  /** Removes what the selector covers (see purge), the sets last. */
  private async remove(selector: PurgeSelector, candidates: Map<string, Variant> | undefined): Promise<PurgedEntry[]> {
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
    // The keys the sources may be stored under, whatever the sets say: a set evicted before its entries
    // (allkeys-*), or entries from before the index, go too (a DEL of a key that is not there costs a round trip).
    if ('sources' in selector) for (const [key, variant] of candidates ?? []) if (!variants.has(key)) variants.set(key, variant)
    // A prefix names no keys, and candidate keys may not be every key of the sources (Next 15 allows any
    // quality; a purge past MAX_CANDIDATE_KEYS has none): on a server that may have evicted a set before its
    // entries (or re-created it since with fewer members), every entry of the prefix is found by its own
    // header (the variant it holds), as a purge of all finds them by a scan.
    const sources = 'sources' in selector && !(candidates as CandidateKeys | undefined)?.complete ? new Set(selector.sources) : undefined
    const covered = 'prefix' in selector ? (href: string) => href.startsWith(selector.prefix) : sources ? (href: string) => sources.has(href) : undefined
    if (covered && (await this.evictionPolicy())) {
      for (const [key, variant] of await this.entriesByHeader(covered, variants)) variants.set(key, variant)
    }
    let keys = [...variants.keys()]
    if ('all' in selector) {
      // Only keys of this prefix's own shape: `--cache-prefix app` must not take another application's
      // `app2…` entries (SCAN's pattern `app*` matches them; the prefix need not end with a separator).
      keys = (await this.scan(`${globEscape(this.prefix)}*`)).map((k) => k.slice(this.prefix.length)).filter((rest) => ENTRY_KEY.test(rest))
    }
    const removed: PurgedEntry[] = []
    // One DEL per key (no cross-slot command), 64 in flight at a time.
    for (let i = 0; i < keys.length; i += 64) {
      const page = keys.slice(i, i + 64)
      const deleted = await Promise.all(page.map((key) => this.keyed(DEL, this.k(key))))
      page.forEach((key, j) => {
        if (Number(deleted[j]) > 0) removed.push({ key, ...(variants.has(key) ? { variant: variants.get(key)! } : {}) })
      })
    }
    // The sets last: a purge that failed half-way can be run again and still finds the rest.
    for (const set of sets) await this.keyed(DEL, set)
    return removed
  }

  /**
   * The entries of this prefix's keys (not in `known`) whose header names a source `covered` selects,
   * a SCAN page at a time: each header read by HEAD (its length, then that many bytes, never the image);
   * where an ACL refuses GETRANGE, the whole entry (GET, which the sidecar's reads need anyway).
   */
  private async entriesByHeader(covered: (href: string) => boolean, known: Map<string, Variant>): Promise<Map<string, Variant>> {
    const found = new Map<string, Variant>()
    let refused = false
    const header = async (key: string): Promise<Buffer | null> => {
      if (!refused) {
        try {
          return (await this.keyed(HEAD, this.k(key))) as Buffer | null
        } catch (err) {
          if (!/NOPERM|no permissions|can't run this command/i.test((err as Error)?.message ?? '')) throw err
          refused = true
          this.log.warn({ err }, 'redis refused GETRANGE: a purge reads whole entries to find their sources; grant +getrange to the ACL user (see the deploy docs)')
        }
      }
      return (await this.keyed(GET, this.k(key))) as Buffer | null
    }
    await this.scanPages(`${globEscape(this.prefix)}*`, async (page) => {
      const keys = page.map((k) => k.slice(this.prefix.length)).filter((rest) => ENTRY_KEY.test(rest) && rest !== 'health-probe' && !known.has(rest))
      for (let i = 0; i < keys.length; i += 64) {
        const batch = keys.slice(i, i + 64)
        const heads = await Promise.all(batch.map(header))
        heads.forEach((head, j) => {
          const variant = head ? decodeMeta(head)?.variant : undefined
          if (variant && covered(variant.href)) found.set(batch[j]!, variant)
        })
      }
    })
    return found
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

  /**
   * Purges logged after `mark` by other processes: what this process's hot tier must drop, replayed
   * after a partition or a lost pub/sub message. When the log no longer reaches back to `mark` (more
   * than PURGE_LOG_LENGTH purges since, or the log lost: a Redis restart, an eviction), a purge of all.
   */
  async purgesAfter(mark: string): Promise<{ mark: string } & LoggedPurges> {
    // Every process polls this each second: the counter alone while nothing was purged, and then only
    // the entries after `mark` (the log is newest first, one id per entry), never the whole log.
    const [seq, ...log] = (await this.run(() => this.client.eval(READ_LOG_AFTER, { keys: this.purgeKeys, arguments: [String(Number(mark) || 0), String(PURGE_LOG_LENGTH)] }))) as Array<Buffer | string | null>
    const last = Number(seq?.toString() ?? 0)
    const since = Number(mark)
    if (last === since) return { mark, selectors: [], completed: [] }
    const entries = log.map((e) => JSON.parse(e!.toString()) as { id: number; kind: string; value: string }).filter((e) => e.id > since).reverse()
    // A counter behind the mark: Redis lost its data (a restart without persistence); what it held then is gone too.
    if (last < since) return { mark: String(last), selectors: [{ all: true }], completed: [] }
    if (entries.length === 0 || entries[0]!.id > since + 1) return { mark: String(last), selectors: [{ all: true }], completed: [] }
    return { mark: String(entries.at(-1)!.id), ...loggedPurges(entries.filter((e) => !this.own.take(e.id))) }
  }

  async delete(key: string): Promise<void> {
    this.forms.forget(key)
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

/** How long commands sent at start wait for the first connection (node-redis' connect retries without end). */
const FIRST_CONNECT_WAIT_MS = 1000

/** What an entry's key is after the prefix: a sha256 in base64url (cacheKey, placeholderKey), or the health probe's. */
const ENTRY_KEY = /^(?:[A-Za-z0-9_-]{43}|health-probe)$/

/**
 * Records the log keeps: two a purge (logged, then done), so 1,000 purges. A job older than that treats
 * its source as purged; a follower that far behind drops its whole hot tier.
 */
const PURGE_LOG_LENGTH = 2000
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
// The counter, and the entries logged after ARGV[1] (at most ARGV[2], newest first); none while the
// counter has not moved past it.
const READ_LOG_AFTER = `local seq = tonumber(redis.call('get', KEYS[1]) or '0')
local out = { tostring(seq) }
local n = math.min(seq - tonumber(ARGV[1]), tonumber(ARGV[2]))
if n > 0 then
  for _, e in ipairs(redis.call('lrange', KEYS[2], 0, n - 1)) do out[#out + 1] = e end
end
return out`
const MEMBERS = `return redis.call('smembers', KEYS[1])`
const DEL = `return redis.call('del', KEYS[1])`
const GET = `return redis.call('get', KEYS[1])`
/** An entry's header (codec.ts): its 4-byte length, then as many bytes; never the image. */
const HEAD = `local h = redis.call('getrange', KEYS[1], 0, 3)
if #h < 4 then return h end
return redis.call('getrange', KEYS[1], 0, 3 + struct.unpack('>I4', h))`

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
