import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { promisify } from 'node:util'
import KeyvSqlite from '@keyv/sqlite'
import { LRUCache } from 'lru-cache'
import sqlite3 from 'sqlite3'
import type { Logger } from 'pino'
import { decodeEntry, decodeMeta, encodeEntry } from './codec.js'
import { MAX_TIMER_MS, type CacheEntry, type CacheStore, type StoreLimits } from './types.js'

const TABLE = 'next_image_cache'
// Page and index overhead on top of the stored bytes, kept out of the entry budget so the
// file itself stays under --cache-max-size.
const OVERHEAD = 0.85

/**
 * The embedded default: a SQLite file through @keyv/sqlite, values stored as BLOBs (see
 * codec.ts). Like Next's own disk cache, a byte-weighted LRU index tracks the entries (rebuilt
 * from the file at start, oldest first) and deletes the least recently used ones beyond the
 * budget and the expired ones in the background; freed pages go back to the file system.
 *
 * Workers of one cluster (`share`) write the same file: each indexes 1/count of the budget,
 * replays only its part of the keys at start, and indexes what it writes or reads. Every row
 * is then in at least one worker's index, so the file stays within the whole budget (rows seen
 * by two workers are counted twice, which only makes eviction start a little earlier).
 */
export class SqliteStore implements CacheStore {
  readonly name: string
  private adapter!: KeyvSqlite
  private readonly index: LRUCache<string, number>
  private readonly ready: Promise<void>
  private vacuumTimer: NodeJS.Timeout | undefined
  private readonly deletions = new Set<Promise<void>>()

  constructor(
    readonly path: string,
    private readonly limits: StoreLimits,
    private readonly log: Logger,
    private readonly share?: { index: number; count: number },
  ) {
    this.name = `sqlite://${path}`
    this.index = new LRUCache<string, number>({
      maxSize: Math.max(Math.floor((limits.maxSize * OVERHEAD) / (share?.count ?? 1)), 1),
      sizeCalculation: (size) => Math.max(size, 1),
      ttlAutopurge: true,
      dispose: (_size, key, reason) => {
        if (reason === 'evict' || reason === 'expire') this.drop(key)
      },
    })
    this.ready = this.open()
    this.ready.catch(() => {}) // surfaced by every operation that awaits it
  }

  private async open(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true })
    if (!existsSync(this.path)) await createFile(this.path)
    this.adapter = new KeyvSqlite({ uri: `sqlite://${this.path}`, table: TABLE, busyTimeout: 5000 })
    this.adapter.on('error', () => {}) // errors surface through the rejected promises
    await this.adapter.query('PRAGMA synchronous = NORMAL')
    await this.adapter.query('PRAGMA journal_size_limit = 4194304')
    await this.replay()
  }

  private drop(key: string): void {
    const deletion = this.ready
      .then(() => this.adapter.delete(key))
      .then(
        () => this.scheduleVacuum(),
        (err: unknown) => this.log.warn({ err, key }, 'sqlite cache: could not delete an evicted entry'),
      )
      .finally(() => this.deletions.delete(deletion))
    this.deletions.add(deletion)
  }

  // Batched: after a burst of evictions, hand the freed pages back once.
  private scheduleVacuum(): void {
    this.vacuumTimer ??= setTimeout(() => void this.vacuum(), 200).unref()
  }

  private vacuum(): Promise<void> {
    clearTimeout(this.vacuumTimer)
    this.vacuumTimer = undefined
    return this.adapter.query('PRAGMA incremental_vacuum').then(
      () => undefined,
      () => undefined,
    )
  }

  /** Rebuilds the LRU index from the file, oldest rows first, dropping what has outlived its keep time. */
  private async replay(): Promise<void> {
    const rows = (await this.adapter.query(`SELECT key, length(value) AS size, substr(value, 1, 4096) AS head FROM ${TABLE} ORDER BY rowid`)) as Array<{
      key: string
      size: number
      head: Buffer | string
    }>
    const now = Date.now()
    for (const row of rows) {
      if (this.share && partition(row.key, this.share.count) !== this.share.index) continue
      const meta = Buffer.isBuffer(row.head) ? decodeMeta(row.head) : undefined
      const ttl = meta?.keepUntil ? meta.keepUntil - now : 0
      if (!meta || ttl <= 0) this.drop(row.key)
      else this.index.set(row.key, row.size, { ttl: Math.min(ttl, MAX_TIMER_MS) })
    }
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    await this.ready
    const value = (await this.adapter.get(key)) as unknown
    if (!Buffer.isBuffer(value)) {
      if (value !== undefined) this.drop(key) // not ours (or from an old format)
      return undefined
    }
    const entry = decodeEntry(value)
    if (!entry) return undefined
    // Promote, or adopt an entry another process wrote to the same file.
    if (this.index.get(key) === undefined) this.index.set(key, value.byteLength)
    return entry
  }

  async set(key: string, entry: CacheEntry, ttlMs: number): Promise<void> {
    if (entry.buffer.byteLength > this.limits.maxEntrySize) return
    await this.ready
    const value = encodeEntry(entry, Date.now() + ttlMs)
    await this.adapter.set(key, value)
    this.index.set(key, value.byteLength, { ttl: Math.min(ttlMs, MAX_TIMER_MS) })
  }

  async delete(key: string): Promise<void> {
    this.index.delete(key)
    await this.adapter.delete(key)
  }

  async ping(): Promise<void> {
    await this.ready
    await this.adapter.query('SELECT 1')
  }

  /** Finishes pending evictions and their vacuum (nothing decided is lost), then closes the file. */
  async close(): Promise<void> {
    const opened = await this.ready.then(() => true, () => false)
    await Promise.all([...this.deletions])
    if (opened && this.vacuumTimer) await this.vacuum()
    clearTimeout(this.vacuumTimer)
    if (opened) await this.adapter.disconnect()
  }

  /** Bytes of entries tracked (for tests and metrics). */
  get size(): number {
    return this.index.calculatedSize
  }
}

/** Which worker replays a key: keys are hashes, so their characters spread evenly. */
function partition(key: string, count: number): number {
  let sum = 0
  for (let i = 0; i < key.length; i++) sum = (sum + key.charCodeAt(i)) | 0
  return Math.abs(sum) % count
}

/**
 * Creates the file with the settings that only take effect on a new database: incremental
 * auto-vacuum (so evictions can shrink the file) and WAL (readers never block the writer).
 */
async function createFile(path: string): Promise<void> {
  const db = await new Promise<sqlite3.Database>((resolve, reject) => {
    const database = new sqlite3.Database(path, (err) => (err ? reject(err) : resolve(database)))
  })
  const exec = promisify(db.exec).bind(db) as (sql: string) => Promise<void>
  await exec('PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA journal_size_limit = 4194304; VACUUM;')
  await (promisify(db.close).bind(db) as () => Promise<void>)()
}
