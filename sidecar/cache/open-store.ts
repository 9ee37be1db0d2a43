import { resolve } from 'node:path'
import type { Logger } from 'pino'
import { ConfigError } from '../errors.js'
import type { Coordinator } from '../runtime/coordinator.js'
import { MemoryStore } from './memory-store.js'
import { RedisCoordinator } from './redis-coordinator.js'
import { RedisStore } from './redis-store.js'
import { isRedisUrl, redactUrl } from './redis-url.js'
import { ResilientStore, type StoreOp } from './resilient-store.js'
import { SqliteStore } from './sqlite-store.js'
import { TieredStore } from './tiered-store.js'
import type { CacheStore, PurgeSelector } from './types.js'

export interface StoreOptions {
  /** Total bytes for SQLite and memory stores (Redis: use the server's maxmemory). */
  maxSize?: number
  /** Entries above this size are served but not stored. */
  maxEntrySize?: number
  /** Key prefix in Redis, so several apps can share one server. */
  prefix?: string
  /** Bytes of the in-process hot tier in front of SQLite and Redis; 0 turns it off. */
  hotSize?: number
  /** In `--workers` mode: this worker's share of a SQLite file the workers write together. */
  share?: { index: number; count: number }
  /** Called when the store's reads or writes start failing (false) or work again (true). */
  onHealth?: (op: StoreOp, up: boolean) => void
}

export const STORE_DEFAULTS = {
  sqlitePath: '.cache/next-image-sidecar/cache.sqlite',
  sqliteMaxSize: 1024 ** 3,
  memoryMaxSize: 256 * 1024 ** 2,
  maxEntrySize: 16 * 1024 ** 2,
  prefix: 'next-image-sidecar:',
  hotSize: 64 * 1024 ** 2,
}

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
}

export interface PurgeFeed {
  mark(): Promise<string>
  after(mark: string): Promise<{ mark: string; selectors: PurgeSelector[] }>
}

/**
 * Opens a cache store from its URL: `sqlite://PATH` (the embedded default), `memory://`,
 * `redis://` / `rediss://` (also Valkey), `redis+cluster://` (Cluster) or `redis+sentinel://` (Sentinel).
 */
export function openStore(cacheUrl: string, log: Logger, options: StoreOptions = {}): OpenedStore {
  const maxEntrySize = options.maxEntrySize ?? STORE_DEFAULTS.maxEntrySize
  const hotSize = options.hotSize ?? STORE_DEFAULTS.hotSize
  const withHot = (store: CacheStore) =>
    hotSize > 0 ? new TieredStore(new MemoryStore({ maxSize: hotSize, maxEntrySize: Math.min(maxEntrySize, hotSize) }, 'hot'), store) : store
  const resilient = (store: CacheStore) => new ResilientStore(store, log, { onHealth: options.onHealth })

  if (cacheUrl === 'memory://' || cacheUrl === 'memory') {
    if (options.share) throw new ConfigError('--cache memory:// is private to each process; with --workers > 1 use sqlite:// or redis://')
    return { store: new MemoryStore({ maxSize: options.maxSize ?? STORE_DEFAULTS.memoryMaxSize, maxEntrySize }) }
  }
  if (cacheUrl.startsWith('sqlite://')) {
    const path = resolve(cacheUrl.slice('sqlite://'.length) || STORE_DEFAULTS.sqlitePath)
    const sqlite = new SqliteStore(path, { maxSize: options.maxSize ?? STORE_DEFAULTS.sqliteMaxSize, maxEntrySize }, log, options.share)
    return { store: withHot(resilient(sqlite)), purgeFeed: { mark: () => sqlite.purgeMark(), after: (mark) => sqlite.purgesAfter(mark) } }
  }
  if (isRedisUrl(cacheUrl)) {
    const redis = new RedisStore(cacheUrl, options.prefix ?? STORE_DEFAULTS.prefix, { maxSize: Infinity, maxEntrySize }, log)
    return { store: withHot(resilient(redis)), coordinator: new RedisCoordinator(redis, log) }
  }
  throw new ConfigError(`--cache: unsupported cache URL "${redactUrl(cacheUrl)}" (expected sqlite://PATH, memory://, redis://HOST:PORT, redis+cluster://HOST:PORT,… or redis+sentinel://HOST:PORT,…/MASTER)`)
}
