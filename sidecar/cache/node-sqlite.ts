import { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import { setTimeout as sleep } from 'node:timers/promises'
import type { KeyvStoreAdapter } from 'keyv'

/**
 * Node's built-in SQLite (node:sqlite, SQLite 3.54 in Node 22.23, 24.22 and 26.12): no native addon
 * of ours, so nothing to compile or download at install. Only the part of its API the cache uses is
 * typed here (@types/node 20 does not know the module).
 */
interface StatementSync {
  all(...params: unknown[]): Array<Record<string, unknown>>
  get(...params: unknown[]): Record<string, unknown> | undefined
  run(...params: unknown[]): { changes: number | bigint }
}
interface DatabaseSync {
  /** Whether a transaction is open (SQLite's autocommit is off). */
  readonly isTransaction: boolean
  prepare(sql: string): StatementSync
  exec(sql: string): void
  close(): void
}
interface NodeSqlite {
  DatabaseSync: new (path: string) => DatabaseSync
}

let loaded: NodeSqlite | undefined

/**
 * node:sqlite, loaded on first use. Node 22 prints "ExperimentalWarning: SQLite is an experimental
 * feature" when the module loads (24 and 26 do not): that one warning, and only while loading it, is
 * kept from the log — an operator cannot act on it, and every other warning still shows.
 */
export function nodeSqlite(): NodeSqlite {
  if (loaded) return loaded
  const emitWarning = process.emitWarning
  process.emitWarning = function (this: NodeJS.Process, warning: string | Error, ...rest: unknown[]) {
    const type = typeof rest[0] === 'string' ? rest[0] : (rest[0] as { type?: string } | undefined)?.type
    const message = typeof warning === 'string' ? warning : warning.message
    if (type === 'ExperimentalWarning' && /^SQLite is an experimental feature/.test(message)) return
    return (emitWarning as (...args: unknown[]) => void).call(this, warning, ...rest)
  } as typeof process.emitWarning
  try {
    loaded = createRequire(import.meta.url)('node:sqlite') as NodeSqlite
  } finally {
    process.emitWarning = emitWarning
  }
  return loaded
}

/** A value as SQLite returns it, with a BLOB as a Buffer (a view, not a copy) as the other drivers give it. */
const asBuffer = (value: unknown): unknown => (value instanceof Uint8Array && !Buffer.isBuffer(value) ? Buffer.from(value.buffer, value.byteOffset, value.byteLength) : value)

/** One statement and its parameters. */
export type SqlStep = [sql: string, ...params: unknown[]]

/** The keyv adapter a SQL-backed store works through: keyv's interface plus SQL for its own index. */
export interface SqlKeyvAdapter extends KeyvStoreAdapter {
  query(sql: string, ...params: unknown[]): Promise<unknown[]>
  /** The statements as one transaction: all of them or, whatever stops the process part-way, none. */
  transaction(steps: SqlStep[]): Promise<void>
  /**
   * A driver whose calls are synchronous underneath (node:sqlite) reads a value at once: no promise,
   * no thread-pool hop, what the hit path answers from. Throws as `get` rejects.
   */
  getNow?(key: string): unknown
  disconnect(): Promise<void>
}

export interface NodeSqliteOptions {
  /** The table keyv's entries live in (key TEXT PRIMARY KEY, value): @keyv/sqlite's layout. */
  table: string
  /** How long a write waits for another connection's write to finish, ms: on a timer, between short tries. */
  busyTimeoutMs: number
}

/**
 * How long one try waits inside SQLite for another process's write lock (its busy handler sleeps in
 * the calling thread, the event loop frozen meanwhile): a few ms, then the wait goes on a timer.
 */
export const BUSY_SPIN_MS = 5
/** The timer's back-off between tries: doubling from the first to the last. */
const BUSY_RETRY_MS = { first: 2, last: 50 }

/** Pure: whether node:sqlite's error is SQLITE_BUSY (another connection holds the lock), extended codes included. */
export function isBusy(err: unknown): boolean {
  const code = (err as { errcode?: unknown } | null)?.errcode
  return typeof code === 'number' && (code & 0xff) === 5
}

/**
 * A keyv store adapter on node:sqlite, with @keyv/sqlite 4's table layout (`key VARCHAR(255)
 * PRIMARY KEY, value TEXT`, a Buffer stored as a BLOB), so a file either wrote is the same file.
 * Statements are prepared once per SQL text. The calls are synchronous underneath: each statement
 * of the cache is short (one row, or a page of PAGE_ROWS in maintenance), and in WAL mode a reader
 * never waits on a writer. A writer that finds another process's write under way waits BUSY_SPIN_MS
 * in SQLite, then on a timer with back-off, trying again, for up to `busyTimeoutMs` in all: a long
 * wait in SQLite (busy_timeout 5000 before) froze every request, /healthz and ResilientStore's own
 * timeout timer for as long as another process wrote (a purge's delete: 3 s).
 */
export class KeyvNodeSqlite extends EventEmitter implements SqlKeyvAdapter {
  readonly opts: NodeSqliteOptions & { dialect: 'sqlite'; uri: string }
  namespace?: string
  private db: DatabaseSync | undefined
  private readonly statements = new Map<string, StatementSync>()
  /** The hit's statement, kept at hand (no lookup of its SQL text per read). */
  private readValue: StatementSync | undefined

  constructor(readonly path: string, options: NodeSqliteOptions) {
    super()
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(options.table)) throw new Error(`invalid table name "${options.table}"`)
    this.opts = { ...options, dialect: 'sqlite', uri: `sqlite://${path}` }
    const db = new (nodeSqlite().DatabaseSync)(path)
    try {
      // Once, at open, the whole wait in SQLite: processes starting together on a new file create its
      // tables at the same time (an open that failed on SQLITE_BUSY left a worker's store down at start).
      db.exec(`PRAGMA busy_timeout = ${Math.floor(options.busyTimeoutMs)}`)
      db.exec(`CREATE TABLE IF NOT EXISTS ${options.table}(key VARCHAR(255) PRIMARY KEY, value TEXT )`)
      db.exec(`PRAGMA busy_timeout = ${Math.min(BUSY_SPIN_MS, Math.floor(options.busyTimeoutMs))}`)
    } catch (err) {
      db.close()
      throw err
    }
    this.db = db
  }

  private statement(sql: string): StatementSync {
    if (!this.db) throw new Error(`sqlite cache: ${this.path} is closed`)
    let statement = this.statements.get(sql)
    if (!statement) this.statements.set(sql, (statement = this.db.prepare(sql)))
    return statement
  }

  /** Runs a statement; while another process holds the write lock, tries again on a timer (see the class). */
  private async busyRetry<T>(run: () => T): Promise<T> {
    const deadline = Date.now() + this.opts.busyTimeoutMs
    for (let wait = BUSY_RETRY_MS.first; ; wait = Math.min(wait * 2, BUSY_RETRY_MS.last)) {
      try {
        return run()
      } catch (err) {
        if (!isBusy(err) || Date.now() + wait > deadline) throw err
      }
      await sleep(wait)
    }
  }

  private rows(sql: string, params: unknown[]): Promise<Array<Record<string, unknown>>> {
    return this.busyRetry(() => this.statement(sql).all(...params))
  }

  private run(sql: string, params: unknown[]): Promise<{ changes: number | bigint }> {
    return this.busyRetry(() => this.statement(sql).run(...params))
  }

  async query(sql: string, ...params: unknown[]): Promise<unknown[]> {
    return this.rows(sql, params)
  }

  /**
   * BEGIN IMMEDIATE takes the write lock before anything is written (a busy file is waited for as any
   * write is, see busyRetry), and the statements run in one synchronous turn, so no other statement
   * of this process lands inside the transaction. A kill -9 part-way leaves none of them: an entry
   * written without its index rows could not be found by a purge.
   */
  async transaction(steps: SqlStep[]): Promise<void> {
    await this.busyRetry(() => {
      const db = this.db
      if (!db) throw new Error(`sqlite cache: ${this.path} is closed`)
      db.exec('BEGIN IMMEDIATE')
      try {
        for (const [sql, ...params] of steps) this.statement(sql).run(...params)
        db.exec('COMMIT')
      } catch (err) {
        // SQLite has rolled back by itself after some errors (SQLITE_FULL, IOERR, NOMEM): a ROLLBACK then
        // throws "no transaction is active", which must not replace the error that says what happened.
        if (db.isTransaction) db.exec('ROLLBACK')
        throw err
      }
    })
  }

  async get<Value>(key: string): Promise<Value | undefined> {
    return (await this.busyRetry(() => this.getNow(key))) as Value | undefined
  }

  /**
   * One row, read at once: the prepared statement's `get`, the BLOB as a Buffer view of what
   * node:sqlite returned. In WAL mode a reader does not wait on a writer; the rare SQLITE_BUSY (a
   * WAL being recovered) is thrown, not retried (`get` retries it).
   */
  getNow(key: string): unknown {
    this.readValue ??= this.statement(`SELECT value FROM ${this.opts.table} WHERE key = ?`)
    const row = this.readValue.get(key)
    return row === undefined ? undefined : asBuffer(row.value)
  }

  async getMany<Value>(keys: string[]): Promise<Array<Value | undefined>> {
    const rows = await this.rows(`SELECT key, value FROM ${this.opts.table} WHERE key IN (SELECT value FROM json_each(?))`, [JSON.stringify(keys)])
    const byKey = new Map(rows.map((r) => [r.key as string, asBuffer(r.value) as Value]))
    return keys.map((key) => byKey.get(key))
  }

  async set(key: string, value: unknown): Promise<void> {
    await this.run(`INSERT INTO ${this.opts.table} (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, [key, value])
  }

  async delete(key: string): Promise<boolean> {
    return Number((await this.run(`DELETE FROM ${this.opts.table} WHERE key = ?`, [key])).changes) > 0
  }

  async deleteMany(keys: string[]): Promise<boolean> {
    return Number((await this.run(`DELETE FROM ${this.opts.table} WHERE key IN (SELECT value FROM json_each(?))`, [JSON.stringify(keys)])).changes) > 0
  }

  async has(key: string): Promise<boolean> {
    return (await this.rows(`SELECT 1 FROM ${this.opts.table} WHERE key = ?`, [key])).length > 0
  }

  async clear(): Promise<void> {
    await this.run(`DELETE FROM ${this.opts.table} WHERE key LIKE ?`, [this.namespace ? `${this.namespace}:%` : '%'])
  }

  async disconnect(): Promise<void> {
    const db = this.db
    this.db = undefined
    this.statements.clear()
    this.readValue = undefined
    db?.close()
  }
}

/**
 * Gives a cache file with no table yet (new, empty, or left part set up by a start killed midway) the settings
 * that only take effect before its first table: incremental auto-vacuum (so evictions can shrink the file) and
 * WAL (readers never block the writer). A file with tables is left as it is.
 */
export function setUpCacheFile(path: string, busyTimeoutMs: number): void {
  const db = new (nodeSqlite().DatabaseSync)(path)
  try {
    // Processes starting together on a new file (a cluster's workers) run this at the same time, and one's
    // open meets the other's VACUUM: each waits for the other (without the wait: "database is locked", the
    // store down at start). Run twice, it changes nothing the first run did.
    db.exec(`PRAGMA busy_timeout = ${Math.floor(busyTimeoutMs)}`)
    // New is read from the schema, not the file's size: the first setting alone already writes a 4 KiB header.
    if (db.prepare('SELECT 1 FROM sqlite_master LIMIT 1').get()) return
    db.exec('PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; VACUUM;')
  } finally {
    db.close()
  }
}
