import { STORE_DEFAULTS } from './defaults.js'
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import { ConfigError } from '../errors.js'
import type { Coordinator } from '../runtime/coordinator.js'
import { MemoryStore } from './memory-store.js'
import { RedisCoordinator } from './redis-coordinator.js'
import { bounded, RedisStore } from './redis-store.js'
import { isRedisUrl, redactUrl } from './redis-url.js'
import { ResilientStore, type StoreOp } from './resilient-store.js'
import { SqliteStore } from './sqlite-store.js'
import { TieredStore } from './tiered-store.js'
import type { CacheStore, LoggedPurges, PurgeSelector } from './types.js'

export interface StoreOptions {
  /** Total bytes for SQLite and memory stores (Redis: use the server's maxmemory): --cache-max-size. */
  maxSize?: number
  /**
   * next.config's images.maximumDiskCacheSize: the embedded store's budget when `maxSize` is not
   * given; 0 keeps no persistent store (the hot tier only), as 0 turns Next's disk cache off.
   */
  maximumDiskCacheSize?: number
  /** Entries above this size are served but not stored. */
  maxEntrySize?: number
  /** Key prefix in Redis, so several apps can share one server. */
  prefix?: string
  /** Bytes of the in-process hot tier in front of SQLite and Redis; 0 turns it off. */
  hotSize?: number
  /** In `--workers` mode: this worker's share of a SQLite file the workers write together. */
  share?: { index: number; count: number }
  /**
   * A maintenance process (`purge`, `warm` on the store): the SQLite store evicts nothing to this
   * process's bound, which is not the serving processes' (it would empty a larger cache).
   */
  maintenance?: boolean
  /** Called when the store's reads or writes start failing (false) or work again (true). */
  onHealth?: (op: StoreOp, up: boolean) => void
}

export { STORE_DEFAULTS }

export interface OpenedStore {
  /** The store the response cache uses: hot tier and failure handling included. */
  store: CacheStore
  /** Cross-process single flight, where the store is shared (Redis). */
  coordinator?: Coordinator
  /**
   * The store's purge log, for a store other processes on the host purge directly (SQLite: the CLI's
   * `purge --cache sqlite://…`): the sidecar follows it to drop its hot tier's copies too.
   */
  purgeFeed?: PurgeFeed
  /** The store answers over the network (Redis): the hit path reads it asynchronously (see createHitPath's readStore). */
  remote?: boolean
}

export interface PurgeFeed {
  /** Whether this process keeps a hot tier: only then does it follow the log (and, on SQLite, say how far). */
  hot: boolean
  mark(): Promise<string>
  /** The purges logged after `mark` (see LoggedPurges), and the position they bring the reader to. */
  after(mark: string): Promise<{ mark: string } & LoggedPurges>
  /**
   * SQLite: where the processes on the file record the log position they applied, so a purge can wait
   * for them (Redis: their pub/sub acknowledgements stand for it).
   */
  readers?: {
    applied(reader: string, mark: string): Promise<void>
    /** Processes seen lately, `reader` aside (`live`), and how many have not applied `mark` yet. */
    behind(reader: string | undefined, mark: string): Promise<{ live: number; behind: number }>
    leave(reader: string): Promise<void>
  }
}

/**
 * Opens a cache store from its URL: `sqlite://PATH` (the embedded default), `memory://`,
 * `redis://` / `rediss://` (also Valkey), `redis+cluster://` (Cluster) or `redis+sentinel://` (Sentinel).
 */
export function openStore(cacheUrl: string, log: Logger, options: StoreOptions = {}): OpenedStore {
  const maxEntrySize = options.maxEntrySize ?? STORE_DEFAULTS.maxEntrySize
  const hotSize = options.hotSize ?? STORE_DEFAULTS.hotSize
  // The hot tier admits by frequency (TinyLFU): a key it turns away is still read from the store.
  const withHot = (store: CacheStore) =>
    hotSize > 0 ? new TieredStore(new MemoryStore({ maxSize: hotSize, maxEntrySize: Math.min(maxEntrySize, hotSize) }, 'hot', { admission: true }), store) : store
  const resilient = (store: CacheStore) => new ResilientStore(store, log, { onHealth: options.onHealth })

  if (options.maximumDiskCacheSize !== undefined && !cacheUrl.startsWith('sqlite://')) {
    log.info({ cache: redactUrl(cacheUrl), maximumDiskCacheSize: options.maximumDiskCacheSize }, 'images.maximumDiskCacheSize bounds the embedded SQLite store only; it does not apply to this cache')
  }
  if (cacheUrl === 'memory://' || cacheUrl === 'memory') {
    if (options.share) throw new ConfigError('--cache memory:// is private to each process; with --workers > 1 use sqlite:// or redis://')
    return { store: new MemoryStore({ maxSize: options.maxSize ?? STORE_DEFAULTS.memoryMaxSize, maxEntrySize }) }
  }
  if (cacheUrl.startsWith('sqlite://')) {
    const path = resolve(cacheUrl.slice('sqlite://'.length) || STORE_DEFAULTS.sqlitePath)
    const bound = diskBound(options)
    log.info({ cache: `sqlite://${path}`, maxSize: bound.bytes, from: bound.from }, describeDiskBound(bound, hotSize))
    if (bound.bytes === 0) {
      // Next's 0 turns its disk cache off; the hot tier (memory) stays, and with no hot tier nothing is kept.
      return { store: hotSize > 0 ? new MemoryStore({ maxSize: hotSize, maxEntrySize: Math.min(maxEntrySize, hotSize) }, 'hot') : new MemoryStore({ maxSize: 1, maxEntrySize: 0 }, 'none://') }
    }
    const sqlite = new SqliteStore(path, { maxSize: bound.bytes, maxEntrySize, evict: !options.maintenance }, log, options.share)
    const readers = { applied: (r: string, m: string) => sqlite.purgeApplied(r, m), behind: (r: string | undefined, m: string) => sqlite.purgeBehind(r, m), leave: (r: string) => sqlite.purgeLeave(r) }
    return { store: withHot(resilient(sqlite)), purgeFeed: { hot: hotSize > 0, mark: () => sqlite.purgeMark(), after: (mark) => sqlite.purgesAfter(mark), readers } }
  }
  if (isRedisUrl(cacheUrl)) {
    const redis = new RedisStore(cacheUrl, options.prefix ?? STORE_DEFAULTS.prefix, { maxSize: Infinity, maxEntrySize }, log)
    // Bounded: the follower must notice a hung Redis as it notices one that is down.
    // The first mark waits for the first connection: a follower that starts without one drops its hot tier when it gets one.
    const feed: PurgeFeed = { hot: hotSize > 0, mark: async () => (await bounded(redis.connected(), 2000), bounded(redis.purgeMark())), after: (mark) => bounded(redis.purgesAfter(mark)) }
    return { store: withHot(resilient(redis)), coordinator: new RedisCoordinator(redis, log), purgeFeed: feed, remote: true }
  }
  throw new ConfigError(`--cache: unsupported cache URL "${redactUrl(cacheUrl)}" (expected sqlite://PATH, memory://, redis://HOST:PORT, redis+cluster://HOST:PORT,… or redis+sentinel://HOST:PORT,…/MASTER)`)
}

/** Which bound the embedded store keeps, and where it comes from. */
export interface DiskBound {
  /** Bytes on disk for the file and its WAL together; 0: no persistent store. */
  bytes: number
  from: '--cache-max-size' | 'images.maximumDiskCacheSize' | 'default'
}

/**
 * Pure: the embedded store's bound. --cache-max-size when given; else next.config's
 * images.maximumDiskCacheSize (Next's LRU bound on .next/cache/images, 0 turning it off); else
 * the default (1 GiB: Next's default, half the free disk at first use, is no bound a container's
 * volume can plan for).
 */
export function diskBound({ maxSize, maximumDiskCacheSize }: Pick<StoreOptions, 'maxSize' | 'maximumDiskCacheSize'>): DiskBound {
  if (maxSize !== undefined) return { bytes: maxSize, from: '--cache-max-size' }
  if (maximumDiskCacheSize !== undefined) return { bytes: maximumDiskCacheSize, from: 'images.maximumDiskCacheSize' }
  return { bytes: STORE_DEFAULTS.sqliteMaxSize, from: 'default' }
}

/** The start-up line that says which bound is in force. */
export function describeDiskBound(bound: DiskBound, hotSize: number): string {
  if (bound.bytes === 0) return `cache: images.maximumDiskCacheSize is 0: no persistent store, ${hotSize > 0 ? `the in-memory hot tier only (${hotSize} bytes)` : 'and no hot tier: nothing is cached'}`
  return `cache: the SQLite file and its WAL are kept within ${bound.bytes} bytes (${bound.from})`
}
