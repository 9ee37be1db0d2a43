import { statSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Logger } from 'pino'
import { isBusy, KeyvNodeSqlite, type SqlKeyvAdapter, type SqlStep, setUpCacheFile } from './node-sqlite.js'
import { encodeEntry, StoredForms } from './codec.js'
import { sqliteBudget } from './sqlite-budget.js'
import { SqliteLru } from './sqlite-lru.js'
import { SqlitePurgeLog } from './sqlite-purge-log.js'
import { INDEX, indexUnindexedRows, SCHEMA, SOURCES, TABLE, TOTAL } from './sqlite-schema.js'
import type { CacheEntry, CacheStore, LoggedPurges, PurgeableStore, PurgedEntry, PurgeSelector, StoreLimits, Variant } from './types.js'

export { sqliteBudget } from './sqlite-budget.js'

/** How often a failed open is tried again. */
const OPEN_RETRY_MS = 1000
const SWEEP_MS = 60_000
/** How often the path is checked for the file this process opened (deleted or replaced under it: opened again). */
const FILE_CHECK_MS = 1000
/** How long a write waits for another process's write to the same file. */
const BUSY_TIMEOUT_MS = 5000

/** Opens the keyv adapter a SqliteStore works through (the file exists, in WAL mode). */
export type SqliteDriver = (path: string, options: { table: string; busyTimeoutMs: number }) => SqlKeyvAdapter | Promise<SqlKeyvAdapter>
/** The default driver: Node's built-in SQLite. */
export const nodeSqliteDriver: SqliteDriver = (path, options) => new KeyvNodeSqlite(path, options)

/**
 * The embedded default: a SQLite file through a keyv adapter on node:sqlite (node-sqlite.ts), values
 * stored as BLOBs (see codec.ts). Like Next's own disk cache it is a byte-bounded LRU, but the index
 * lives in the file itself (sqlite-schema.ts, sqlite-lru.ts), so opening a file of any size reads
 * nothing into memory, and eviction of the least recently used entries beyond the budget
 * (sqlite-budget.ts: the WAL counted) and of the expired ones runs as SQL. Freed pages go back to
 * the file system. Purges and their log live in the file too (sqlite-purge-log.ts).
 *
 * Workers of one cluster (`share`) and other processes writing the same file share that index,
 * so the whole budget holds across them. Only a file written before the index existed is read
 * at start, once, in pages of PAGE_ROWS headers; with `share` each worker indexes its part of
 * the rows (chosen in SQL).
 */
export class SqliteStore implements CacheStore, PurgeableStore {
  readonly name: string
  private adapter!: SqlKeyvAdapter
  private readonly wal: { walBytes: number; walPages: number }
  private readonly lru: SqliteLru
  private readonly purges: SqlitePurgeLog
  private ready: Promise<void> | undefined
  /** When the last open failed; another is tried after OPEN_RETRY_MS (a volume mounted late, a full disk). */
  private openFailedAt: number | undefined
  private sweepTimer: NodeJS.Timeout | undefined
  private fileTimer: NodeJS.Timeout | undefined
  /** The file opened (device and inode): another at the path, or none, means it was replaced or deleted. */
  private identity: { dev: number; ino: number } | undefined
  /** A reopen of a deleted or replaced file is under way (checkFile). */
  private reopening = false
  /** close() was called: nothing is watched or reopened any more. */
  private closed = false
  private readonly background = new Set<Promise<void>>()
  /** Each key's stored form, parsed once (see StoredForms). */
  private readonly forms = new StoredForms()
  /** The file is open and no reopen is under way: `peek` can read it at once. */
  private isOpen = false

  constructor(
    readonly path: string,
    /** `evict: false` in a maintenance process (purge, warm): the serving processes' bound, not its own, holds the file. */
    private readonly limits: StoreLimits & { evict?: boolean },
    private readonly log: Logger,
    private readonly share?: { index: number; count: number },
    /** The keyv adapter on the file: node:sqlite unless a test or the bench compares another driver. */
    private readonly driver: SqliteDriver = nodeSqliteDriver,
  ) {
    this.name = `sqlite://${path}`
    const { entries, ...wal } = sqliteBudget(limits.maxSize)
    this.wal = wal
    this.lru = new SqliteLru(this.query, entries, (work) => this.track(work))
    this.purges = new SqlitePurgeLog(this.query)
    void this.opened().catch(() => {}) // surfaced by every operation that awaits it
  }

  private readonly query = <T = unknown>(sql: string, ...params: unknown[]): Promise<T[]> => this.adapter.query(sql, ...params) as Promise<T[]>

  /**
   * The open file, opened again after a failed open at most once per OPEN_RETRY_MS: a store that
   * could not open at start (a full disk, a volume not yet mounted) recovers when it can.
   */
  private opened(): Promise<void> {
    if (this.ready && !(this.openFailedAt !== undefined && Date.now() - this.openFailedAt >= OPEN_RETRY_MS)) return this.ready
    this.openFailedAt = undefined
    this.ready = this.open().catch(async (err: unknown) => {
      this.openFailedAt = Date.now()
      await this.adapter?.disconnect().catch(() => {})
      throw err
    })
    return this.ready
  }

  private async open(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true })
    // No file yet, an empty one (a path that names a volume file not yet written) or one a start killed before
    // its first table: each is a new database, whose settings only take effect before its first table.
    setUpCacheFile(this.path, BUSY_TIMEOUT_MS)
    this.adapter = await this.driver(this.path, { table: TABLE, busyTimeoutMs: BUSY_TIMEOUT_MS })
    const { dev, ino } = statSync(this.path)
    this.identity = { dev, ino }
    this.adapter.on('error', () => {}) // errors surface through the rejected promises
    await this.query('PRAGMA synchronous = NORMAL')
    // The WAL counts in the bound: checkpointed every walPages pages, truncated back to walBytes after.
    await this.query(`PRAGMA journal_size_limit = ${this.wal.walBytes}`)
    await this.query(`PRAGMA wal_autocheckpoint = ${this.wal.walPages}`)
    for (const statement of SCHEMA) await this.query(statement)
    await indexUnindexedRows(this.query, this.share)
    await this.query(`DELETE FROM ${INDEX} WHERE NOT EXISTS (SELECT 1 FROM ${TABLE} WHERE ${TABLE}.key = ${INDEX}.key)`)
    await this.query(`DELETE FROM ${SOURCES} WHERE NOT EXISTS (SELECT 1 FROM ${INDEX} WHERE ${INDEX}.key = ${SOURCES}.key)`)
    // Self-healing: whatever happened to the file, the total is the index's sum again.
    await this.query(`UPDATE ${TOTAL} SET bytes = (SELECT total(size) FROM ${INDEX})`)
    await this.sweep()
    if (this.evicts) await this.lru.evict()
    this.sweepTimer = setInterval(() => this.track(this.sweep()), SWEEP_MS).unref()
    if (!this.closed) this.fileTimer ??= setInterval(() => this.checkFile(), FILE_CHECK_MS).unref()
    this.isOpen = !this.closed
  }

  /**
   * A file deleted under a running process (its directory removed, a volume emptied) or replaced by
   * another would keep being served from the unlinked inode, and purged on the new file to no effect:
   * the path is checked each FILE_CHECK_MS and the file at it opened again. The purge log then starts
   * over, which the sidecar's follower takes as a purge of all (SqlitePurgeLog.after).
   */
  private checkFile(): void {
    const opened = this.identity
    if (opened === undefined || this.reopening || this.closed) return
    const now = statSync(this.path, { throwIfNoEntry: false })
    if (now && now.dev === opened.dev && now.ino === opened.ino) return
    this.identity = undefined
    this.isOpen = false
    this.log.warn({ cache: this.name, deleted: now === undefined }, 'sqlite cache: the file was deleted or replaced under this process; opening the one at the path again')
    this.reopening = true
    clearInterval(this.fileTimer)
    this.fileTimer = undefined
    clearInterval(this.sweepTimer)
    const previous = this.adapter
    this.ready = undefined
    this.track(
      (async () => {
        try {
          await previous.disconnect().catch(() => {})
          if (!this.closed) await this.opened()
        } finally {
          this.reopening = false
        }
      })(),
    )
  }

  private async sweep(): Promise<void> {
    await this.lru.sweep()
    await this.purges.expire()
  }

  /** Background work close() waits for, with its failure logged (a request never waits on it). */
  private track(work: Promise<void>): void {
    const tracked = work
      .catch((err: unknown) => this.log.warn({ err }, 'sqlite cache: background maintenance failed'))
      .finally(() => this.background.delete(tracked))
    this.background.add(tracked)
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    await this.opened()
    return this.entryOf(key, (await this.adapter.get(key)) as unknown)
  }

  /**
   * The hit path's read (see SyncLookup): the row read at once when the driver can (node:sqlite),
   * the file open and no reopen under way; else undefined, and the request goes the full way (`get`).
   * Like `get`, a read writes nothing: the LRU's bookkeeping is a touch in memory, written in batches.
   */
  peek(key: string): CacheEntry | undefined {
    if (!this.isOpen || this.closed || !this.adapter.getNow) return undefined
    let value: unknown
    try {
      value = this.adapter.getNow(key)
    } catch (err) {
      if (isBusy(err)) return undefined // `get` waits for it
      throw err
    }
    return this.entryOf(key, value)
  }

  private entryOf(key: string, value: unknown): CacheEntry | undefined {
    if (!Buffer.isBuffer(value)) {
      if (value !== undefined) this.track(this.delete(key)) // not ours (or from an old format)
      return undefined
    }
    const entry = this.forms.decode(key, value)
    if (!entry) return undefined
    this.lru.touch(key)
    return entry
  }

  async set(key: string, entry: CacheEntry, ttlMs: number, purgeMark?: string): Promise<void> {
    // Not stored: an older entry of the key must not outlive it (it would be served STALE, refreshed, and never replaced).
    if (entry.buffer.byteLength > this.limits.maxEntrySize) return this.delete(key)
    await this.opened()
    const now = Date.now()
    const keepUntil = now + ttlMs
    const value = encodeEntry(entry, keepUntil)
    if (value.byteLength > this.lru.budget) return this.delete(key)
    // A write can land after its caller stopped waiting (ResilientStore's timeout): it checks the purge log itself, from the job's mark.
    const mark = entry.variant ? (purgeMark ?? (await this.purgeMark())) : undefined
    const { variant } = entry
    // The entry, its index row and its source row in one transaction: a process killed between them
    // left entries no purge of their source could find.
    await this.adapter.transaction([
      [`INSERT INTO ${TABLE} (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value],
      this.lru.recordStep(key, value.byteLength, keepUntil, now),
      ...(variant ? [[`INSERT OR REPLACE INTO ${SOURCES} (key, href, width, quality, mime) VALUES (?, ?, ?, ?, ?)`, key, variant.href, variant.width, variant.quality, variant.mimeType] satisfies SqlStep] : []),
    ])
    if (variant && (await this.purgedSince(mark, variant.href))) await this.delete(key)
    if (this.evicts) await this.lru.afterWrite()
  }

  private get evicts(): boolean {
    return this.limits.evict !== false
  }

  async purge(selector: PurgeSelector, candidates?: Map<string, Variant>): Promise<PurgedEntry[]> {
    await this.opened()
    const removed = await this.purges.purge(selector, candidates)
    for (const { key } of removed) this.lru.forget(key)
    await this.lru.readTotal()
    this.lru.scheduleVacuum()
    return removed
  }

  async purgeMark(): Promise<string> {
    await this.opened()
    return this.purges.mark()
  }

  async purgedSince(mark: string | undefined, href: string): Promise<boolean> {
    if (mark === undefined) return true
    await this.opened()
    return this.purges.purgedSince(mark, href)
  }

  /** Purges logged after `mark` (another process's, e.g. the CLI's): what this process's hot tier must drop too. */
  async purgesAfter(mark: string): Promise<{ mark: string } & LoggedPurges> {
    await this.opened()
    return this.purges.after(mark)
  }

  /** See SqlitePurgeLog.applied, behind and leave: the processes on the file that follow its purge log. */
  async purgeApplied(reader: string, mark: string): Promise<void> {
    await this.opened()
    await this.purges.applied(reader, mark)
  }

  async purgeBehind(reader: string | undefined, mark: string): Promise<{ live: number; behind: number }> {
    await this.opened()
    return this.purges.behind(reader, mark)
  }

  async purgeLeave(reader: string): Promise<void> {
    await this.opened()
    await this.purges.leave(reader)
  }

  async delete(key: string): Promise<void> {
    await this.opened()
    this.lru.forget(key)
    this.forms.forget(key)
    await this.adapter.delete(key) // the trigger deletes its index row
  }

  async ping(): Promise<void> {
    await this.opened()
    await this.query('SELECT 1')
  }

  /** Finishes pending evictions, recorded reads and the vacuum (nothing decided is lost), then closes the file. */
  async close(): Promise<void> {
    this.closed = true
    this.isOpen = false
    clearInterval(this.fileTimer)
    this.fileTimer = undefined
    const opened = (await this.ready?.then(() => true, () => false)) ?? false
    clearInterval(this.sweepTimer)
    while (this.background.size > 0) await Promise.all([...this.background])
    if (opened) await this.lru.flushTouches().catch(() => {})
    await this.lru.close(opened)
    if (opened) await this.adapter.disconnect()
  }

  /** Bytes of entries in the file's index, as last read (for tests and metrics). */
  get size(): number {
    return this.lru.bytes
  }
}
