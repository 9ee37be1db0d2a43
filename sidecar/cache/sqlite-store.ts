import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { promisify } from 'node:util'
import KeyvSqlite from '@keyv/sqlite'
import sqlite3 from 'sqlite3'
import type { Logger } from 'pino'
import { decodeEntry, encodeEntry } from './codec.js'
import { markTime, type CacheEntry, type CacheStore, type PurgeableStore, type PurgedEntry, type PurgeSelector, type StoreLimits } from './types.js'

const TABLE = 'next_image_cache'
/** How often a failed open is tried again. */
const OPEN_RETRY_MS = 1000
/** Per entry: its size, keep time and last use; a trigger keeps it in step with TABLE. */
const INDEX = `${TABLE}_lru`
/** Per entry with a known source: the source and the variant, so a purge finds a source's keys without a scan. */
const SOURCES = `${TABLE}_sources`
/** The purge log: a job that started before a purge of its source must not store (see ResponseCache). */
const PURGES = `${TABLE}_purges`
/** Longer than any job may run: a job's mark older than the log is answered from what is left, safely. */
const PURGE_LOG_MS = 24 * 60 * 60 * 1000
/** One row: the bytes INDEX counts, kept exact by triggers (no scan to know the total). */
const TOTAL = `${TABLE}_bytes`
// Page and index overhead on top of the stored bytes, kept out of the entry budget so the
// file itself stays under --cache-max-size.
const OVERHEAD = 0.85
/** Rows read per query when indexing a file from before INDEX existed: bounds the memory of that pass. */
const PAGE_ROWS = 256
/**
 * In SQL, the length of an encoded entry's header (codec.ts: 4 bytes, big-endian), read from its
 * hex digits; NULL beyond 64 KiB (an entry's metadata is a few hundred bytes).
 */
const HEADER_LENGTH = `CASE WHEN substr(value, 1, 2) = x'0000' THEN ${[4096, 256, 16, 1]
  .map((weight, i) => `(instr('0123456789ABCDEF', substr(hex(substr(value, 3, 2)), ${i + 1}, 1)) - 1) * ${weight}`)
  .join(' + ')} END`
/** Reads are recorded in memory and written as one statement: at most this many before a flush. */
const MAX_TOUCHES = 512
const TOUCH_FLUSH_MS = 1000
const SWEEP_MS = 60_000

/**
 * The embedded default: a SQLite file through @keyv/sqlite, values stored as BLOBs (see
 * codec.ts). Like Next's own disk cache it is a byte-bounded LRU, but the index lives in the
 * file itself (INDEX: key, size, keep time, last use; TOTAL: their sum, kept by triggers), so
 * opening a file of any size reads nothing into memory, and eviction of the least recently used
 * entries beyond the budget and of the expired ones runs as SQL. Freed pages go back to the
 * file system.
 *
 * Workers of one cluster (`share`) and other processes writing the same file share that index,
 * so the whole budget holds across them. Only a file written before the index existed is read
 * at start, once, in pages of PAGE_ROWS headers; with `share` each worker indexes its part of
 * the rows (chosen in SQL).
 */
export class SqliteStore implements CacheStore, PurgeableStore {
  readonly name: string
  private adapter!: KeyvSqlite
  private readonly budget: number
  private ready: Promise<void> | undefined
  /** When the last open failed; another is tried after OPEN_RETRY_MS (a volume mounted late, a full disk). */
  private openFailedAt: number | undefined
  private bytes = 0
  /** Last reads not yet written to INDEX: key → time. */
  private touches = new Map<string, number>()
  private touchTimer: NodeJS.Timeout | undefined
  private sweepTimer: NodeJS.Timeout | undefined
  private vacuumTimer: NodeJS.Timeout | undefined
  private evicting: Promise<void> | undefined
  private readonly background = new Set<Promise<void>>()
  /** Purges this process logged (see purgesAfter). */
  private readonly ownPurges = new Set<number>()

  constructor(
    readonly path: string,
    private readonly limits: StoreLimits,
    private readonly log: Logger,
    private readonly share?: { index: number; count: number },
  ) {
    this.name = `sqlite://${path}`
    this.budget = Math.max(Math.floor(limits.maxSize * OVERHEAD), 1)
    void this.opened().catch(() => {}) // surfaced by every operation that awaits it
  }

  private query<T = unknown>(sql: string, ...params: unknown[]): Promise<T[]> {
    return this.adapter.query(sql, ...params) as Promise<T[]>
  }

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
    if (!existsSync(this.path)) await createFile(this.path)
    this.adapter = new KeyvSqlite({ uri: `sqlite://${this.path}`, table: TABLE, busyTimeout: 5000 })
    this.adapter.on('error', () => {}) // errors surface through the rejected promises
    await this.query('PRAGMA synchronous = NORMAL')
    await this.query('PRAGMA journal_size_limit = 4194304')
    for (const statement of SCHEMA) await this.query(statement)
    await this.indexUnindexedRows()
    await this.query(`DELETE FROM ${INDEX} WHERE NOT EXISTS (SELECT 1 FROM ${TABLE} WHERE ${TABLE}.key = ${INDEX}.key)`)
    await this.query(`DELETE FROM ${SOURCES} WHERE NOT EXISTS (SELECT 1 FROM ${INDEX} WHERE ${INDEX}.key = ${SOURCES}.key)`)
    // Self-healing: whatever happened to the file, the total is the index's sum again.
    await this.query(`UPDATE ${TOTAL} SET bytes = (SELECT total(size) FROM ${INDEX})`)
    await this.sweep()
    await this.evict()
    this.sweepTimer = setInterval(() => this.track(this.sweep()), SWEEP_MS).unref()
  }

  /**
   * Rows without an index row — a file written before INDEX existed, or by a process that
   * stopped between its two writes — are indexed in pages of PAGE_ROWS, oldest first, as least
   * recently used, each page by SQLite alone (their headers never reach JavaScript); what is not
   * an entry of ours or has outlived its keep time is deleted.
   */
  private async indexUnindexedRows(): Promise<void> {
    const unindexed = `NOT EXISTS (SELECT 1 FROM ${INDEX} WHERE ${INDEX}.key = ${TABLE}.key)${this.share ? ` AND ${TABLE}.rowid % ${this.share.count} = ${this.share.index}` : ''}`
    let after = 0
    for (;;) {
      const [page] = await this.query<{ last: number | null }>(
        `SELECT max(id) AS last FROM (SELECT rowid AS id FROM ${TABLE} WHERE rowid > ? AND ${unindexed} ORDER BY rowid LIMIT ${PAGE_ROWS})`,
        after,
      )
      const last = page?.last
      if (last === null || last === undefined) return
      // The row id as the last use: older than any use from now on, in the order rows were written.
      await this.query(
        `WITH page AS (SELECT rowid AS id, key, length(value) AS size, CAST(substr(value, 5, ${HEADER_LENGTH}) AS TEXT) AS meta
                       FROM ${TABLE} WHERE rowid > ? AND rowid <= ? AND ${unindexed})
         INSERT OR IGNORE INTO ${INDEX} (key, size, keep_until, used)
         SELECT key, size, meta ->> '$.keepUntil', id FROM page
         WHERE json_valid(meta) AND meta ->> '$.contentType' IS NOT NULL AND typeof(meta ->> '$.expireAt') IN ('integer', 'real')
           AND typeof(meta ->> '$.keepUntil') IN ('integer', 'real') AND meta ->> '$.keepUntil' > ?`,
        after,
        last,
        Date.now(),
      )
      await this.query(`DELETE FROM ${TABLE} WHERE rowid > ? AND rowid <= ? AND ${unindexed}`, after, last)
      after = last
    }
  }

  /** Background work close() waits for, with its failure logged (a request never waits on it). */
  private track(work: Promise<void>): void {
    const tracked = work
      .catch((err: unknown) => this.log.warn({ err }, 'sqlite cache: background maintenance failed'))
      .finally(() => this.background.delete(tracked))
    this.background.add(tracked)
  }

  /** Deletes what has outlived its keep time (the trigger deletes the entries themselves). */
  private async sweep(): Promise<void> {
    await this.query(`DELETE FROM ${INDEX} WHERE keep_until <= ?`, Date.now())
    await this.query(`DELETE FROM ${PURGES} WHERE at < ?`, Date.now() - PURGE_LOG_MS)
    await this.readTotal()
    this.scheduleVacuum()
  }

  private async readTotal(): Promise<number> {
    const [row] = await this.query<{ bytes: number }>(`SELECT bytes FROM ${TOTAL}`)
    this.bytes = row?.bytes ?? 0
    return this.bytes
  }

  /** Deletes the least recently used entries until the total is within the budget; one run at a time. */
  private evict(): Promise<void> {
    this.evicting ??= (async () => {
      await this.flushTouches()
      let total = await this.readTotal()
      while (total > this.budget) {
        // The oldest PAGE_ROWS entries, and of those as many as cover the excess. The excess is read
        // in the statement itself: workers sharing the file evict at the same time, and an excess
        // read before would be deleted once per worker (a burst could empty the cache).
        await this.query(
          `WITH oldest AS (SELECT key, size, used FROM ${INDEX} ORDER BY used LIMIT ${PAGE_ROWS}),
                running AS (SELECT key, sum(size) OVER (ORDER BY used ROWS UNBOUNDED PRECEDING) - size AS before FROM oldest)
           DELETE FROM ${INDEX} WHERE key IN (SELECT key FROM running WHERE before < (SELECT bytes FROM ${TOTAL}) - ?)`,
          this.budget,
        )
        const left = await this.readTotal()
        if (left >= total) break // nothing left to delete
        total = left
        this.scheduleVacuum()
      }
    })().finally(() => (this.evicting = undefined))
    return this.evicting
  }

  private touch(key: string): void {
    this.touches.set(key, Date.now())
    if (this.touches.size >= MAX_TOUCHES) this.track(this.flushTouches())
    else this.touchTimer ??= setTimeout(() => this.track(this.flushTouches()), TOUCH_FLUSH_MS).unref()
  }

  private async flushTouches(): Promise<void> {
    clearTimeout(this.touchTimer)
    this.touchTimer = undefined
    if (this.touches.size === 0) return
    const touches = Object.fromEntries(this.touches)
    this.touches = new Map()
    await this.query(
      `UPDATE ${INDEX} SET used = max(used, touched.value) FROM json_each(?) AS touched WHERE ${INDEX}.key = touched.key`,
      JSON.stringify(touches),
    )
  }

  // Batched: after a burst of evictions, hand the freed pages back once.
  private scheduleVacuum(): void {
    this.vacuumTimer ??= setTimeout(() => void this.vacuum(), 200).unref()
  }

  private vacuum(): Promise<void> {
    clearTimeout(this.vacuumTimer)
    this.vacuumTimer = undefined
    return this.query('PRAGMA incremental_vacuum').then(
      () => undefined,
      () => undefined,
    )
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    await this.opened()
    const value = (await this.adapter.get(key)) as unknown
    if (!Buffer.isBuffer(value)) {
      if (value !== undefined) this.track(this.delete(key)) // not ours (or from an old format)
      return undefined
    }
    const entry = decodeEntry(value)
    if (!entry) return undefined
    this.touch(key)
    return entry
  }

  async set(key: string, entry: CacheEntry, ttlMs: number, purgeMark?: string): Promise<void> {
    if (entry.buffer.byteLength > this.limits.maxEntrySize) return
    await this.opened()
    const now = Date.now()
    const keepUntil = now + ttlMs
    const value = encodeEntry(entry, keepUntil)
    if (value.byteLength > this.budget) return
    // A write can land after its caller stopped waiting (ResilientStore's timeout): it checks the purge log itself, from the job's mark.
    const mark = entry.variant ? (purgeMark ?? (await this.purgeMark())) : undefined
    await this.adapter.set(key, value)
    await this.query(
      `INSERT INTO ${INDEX} (key, size, keep_until, used) VALUES (?, ?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET size = excluded.size, keep_until = excluded.keep_until, used = excluded.used`,
      key,
      value.byteLength,
      keepUntil,
      now,
    )
    const { variant } = entry
    if (variant) {
      await this.query(
        `INSERT OR REPLACE INTO ${SOURCES} (key, href, width, quality, mime) SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM ${INDEX} WHERE key = ?)`,
        key,
        variant.href,
        variant.width,
        variant.quality,
        variant.mimeType,
        key,
      )
      if (await this.purgedSince(mark, variant.href)) await this.delete(key)
    }
    if ((await this.readTotal()) > this.budget) this.track(this.evict())
  }

  /**
   * Logs the purge, then deletes the selected index rows (their entries and source rows go by
   * trigger). Sources are found through SOURCES' href index (a prefix as a range on it); only a
   * purge of all touches every row.
   */
  async purge(selector: PurgeSelector): Promise<PurgedEntry[]> {
    await this.opened()
    const [kind, value] = 'all' in selector ? ['all', ''] : 'prefix' in selector ? ['prefix', selector.prefix] : ['sources', JSON.stringify(selector.sources)]
    const [logged] = await this.query<{ id: number }>(`INSERT INTO ${PURGES} (kind, value, at) VALUES (?, ?, ?) RETURNING id`, kind, value, Date.now())
    if (logged) this.ownPurges.add(logged.id)
    type Row = { key: string; href: string | null; width: number; quality: number; mime: string }
    const columns = `${INDEX}.key AS key, href, width, quality, mime`
    let rows: Row[]
    if ('all' in selector) {
      rows = await this.query<Row>(`SELECT ${columns} FROM ${INDEX} LEFT JOIN ${SOURCES} USING (key)`)
      await this.query(`DELETE FROM ${INDEX}`)
      await this.query(`DELETE FROM ${TABLE}`)
    } else {
      const where =
        'prefix' in selector
          ? { sql: `href >= ? AND href < ? || char(1114111)`, params: [selector.prefix, selector.prefix] }
          : { sql: `href IN (SELECT value FROM json_each(?))`, params: [JSON.stringify(selector.sources)] }
      rows = await this.query<Row>(`SELECT ${columns} FROM ${SOURCES} JOIN ${INDEX} USING (key) WHERE ${where.sql}`, ...where.params)
      if (rows.length > 0) await this.query(`DELETE FROM ${INDEX} WHERE key IN (SELECT value FROM json_each(?))`, JSON.stringify(rows.map((r) => r.key)))
    }
    for (const row of rows) this.touches.delete(row.key)
    await this.readTotal()
    this.scheduleVacuum()
    return rows.map((r) => ({ key: r.key, ...(r.href !== null ? { variant: { href: r.href, width: r.width, quality: r.quality, mimeType: r.mime } } : {}) }))
  }

  async purgeMark(): Promise<string> {
    await this.opened()
    const [row] = await this.query<{ id: number | null }>(`SELECT max(id) AS id FROM ${PURGES}`)
    return String(row?.id ?? 0)
  }

  async purgedSince(mark: string | undefined, href: string): Promise<boolean> {
    if (mark === undefined) return true
    await this.opened()
    const from = markTime(mark)
    const [row] = await this.query<{ hit: number }>(
      `SELECT count(*) AS hit FROM ${PURGES} WHERE ${from !== undefined ? 'at >= ?' : 'id > ?'} AND (kind = 'all' OR (kind = 'prefix' AND substr(?, 1, length(${PURGES}.value)) = ${PURGES}.value)
         OR (kind = 'sources' AND EXISTS (SELECT 1 FROM json_each(${PURGES}.value) AS s WHERE s.value = ?)))`,
      from ?? Number(mark),
      href,
      href,
    )
    return (row?.hit ?? 1) > 0
  }

  /** Purges logged after `mark` (another process's, e.g. the CLI's): what this process's hot tier must drop too. */
  async purgesAfter(mark: string): Promise<{ mark: string; selectors: PurgeSelector[] }> {
    await this.opened()
    const rows = await this.query<{ id: number; kind: string; value: string }>(`SELECT id, kind, value FROM ${PURGES} WHERE id > ? ORDER BY id`, Number(mark))
    // This process's own purges were applied here when they were made; replayed, they would mark its
    // new jobs of those sources as overtaken.
    const selectors = rows.filter((r) => !this.ownPurges.delete(r.id)).map((r): PurgeSelector => (r.kind === 'all' ? { all: true } : r.kind === 'prefix' ? { prefix: r.value } : { sources: JSON.parse(r.value) as string[] }))
    return { mark: String(rows.at(-1)?.id ?? mark), selectors }
  }

  async delete(key: string): Promise<void> {
    await this.opened()
    this.touches.delete(key)
    await this.adapter.delete(key) // the trigger deletes its index row
  }

  async ping(): Promise<void> {
    await this.opened()
    await this.query('SELECT 1')
  }

  /** Finishes pending evictions, recorded reads and the vacuum (nothing decided is lost), then closes the file. */
  async close(): Promise<void> {
    const opened = (await this.ready?.then(() => true, () => false)) ?? false
    clearInterval(this.sweepTimer)
    while (this.background.size > 0) await Promise.all([...this.background])
    if (opened) {
      await this.flushTouches().catch(() => {})
      if (this.vacuumTimer) await this.vacuum()
    }
    clearTimeout(this.vacuumTimer)
    if (opened) await this.adapter.disconnect()
  }

  /** Bytes of entries in the file's index, as last read (for tests and metrics). */
  get size(): number {
    return this.bytes
  }
}

/**
 * The index beside keyv's table, created if missing (files from before it are indexed at start).
 * Triggers keep it in step: an entry deleted through keyv loses its index row, an index row
 * deleted by eviction or expiry takes its entry with it, and TOTAL follows every change.
 */
const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS ${INDEX} (key TEXT PRIMARY KEY, size INTEGER NOT NULL, keep_until INTEGER NOT NULL, used INTEGER NOT NULL)`,
  `CREATE INDEX IF NOT EXISTS ${INDEX}_used ON ${INDEX} (used)`,
  `CREATE INDEX IF NOT EXISTS ${INDEX}_keep_until ON ${INDEX} (keep_until)`,
  `CREATE TABLE IF NOT EXISTS ${TOTAL} (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL)`,
  `INSERT OR IGNORE INTO ${TOTAL} (id, bytes) VALUES (0, 0)`,
  `CREATE TRIGGER IF NOT EXISTS ${INDEX}_insert AFTER INSERT ON ${INDEX} BEGIN UPDATE ${TOTAL} SET bytes = bytes + NEW.size; END`,
  `CREATE TRIGGER IF NOT EXISTS ${INDEX}_update AFTER UPDATE OF size ON ${INDEX} BEGIN UPDATE ${TOTAL} SET bytes = bytes - OLD.size + NEW.size; END`,
  `CREATE TRIGGER IF NOT EXISTS ${INDEX}_delete AFTER DELETE ON ${INDEX} BEGIN
     UPDATE ${TOTAL} SET bytes = bytes - OLD.size;
     DELETE FROM ${TABLE} WHERE key = OLD.key;
   END`,
  `CREATE TRIGGER IF NOT EXISTS ${TABLE}_delete AFTER DELETE ON ${TABLE} BEGIN DELETE FROM ${INDEX} WHERE key = OLD.key; END`,
  `CREATE TABLE IF NOT EXISTS ${SOURCES} (key TEXT PRIMARY KEY, href TEXT NOT NULL, width INTEGER NOT NULL, quality INTEGER NOT NULL, mime TEXT NOT NULL)`,
  `CREATE INDEX IF NOT EXISTS ${SOURCES}_href ON ${SOURCES} (href)`,
  `CREATE TRIGGER IF NOT EXISTS ${INDEX}_delete_source AFTER DELETE ON ${INDEX} BEGIN DELETE FROM ${SOURCES} WHERE key = OLD.key; END`,
  `CREATE TABLE IF NOT EXISTS ${PURGES} (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, value TEXT NOT NULL, at INTEGER NOT NULL)`,
]

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
