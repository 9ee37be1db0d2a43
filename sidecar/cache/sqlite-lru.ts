import { deleteIndexWhere, nextTurn } from './sqlite-pages.js'
import type { SqlStep } from './node-sqlite.js'
import { INDEX, PAGE_ROWS, TOTAL, type Query } from './sqlite-schema.js'

/** Reads are recorded in memory and written as one statement: at most this many before a flush. */
const MAX_TOUCHES = 512
const TOUCH_FLUSH_MS = 1000
/** After a burst of evictions the freed pages are handed back once, this long after the first. */
const VACUUM_DELAY_MS = 200

/**
 * The byte-bounded LRU of the SQLite store, kept in the file (INDEX: key, size, keep time, last
 * use; TOTAL: their sum, kept by triggers): records writes and reads, evicts the least recently
 * used entries beyond the budget and the expired ones, in SQL, and hands freed pages back to the
 * file system (incremental vacuum). Workers sharing the file share the index, so the budget holds
 * across them. Background work goes through `track` (the store waits for it on close).
 */
export class SqliteLru {
  /** The bytes INDEX counted when last read. */
  bytes = 0
  /** Last reads not yet written to INDEX: key → time. */
  private touches = new Map<string, number>()
  private touchTimer: NodeJS.Timeout | undefined
  private vacuumTimer: NodeJS.Timeout | undefined
  private evicting: Promise<void> | undefined

  constructor(
    private readonly query: Query,
    /** Bytes of entries the file may hold (sqlite-budget.ts). */
    readonly budget: number,
    private readonly track: (work: Promise<void>) => void,
  ) {}

  /** The statement that indexes a stored entry as used now (run in the entry's own transaction). */
  recordStep(key: string, size: number, keepUntil: number, now: number): SqlStep {
    return [
      `INSERT INTO ${INDEX} (key, size, keep_until, used) VALUES (?, ?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET size = excluded.size, keep_until = excluded.keep_until, used = excluded.used`,
      key,
      size,
      keepUntil,
      now,
    ]
  }

  /** After a write: evicts in the background when the total is over the budget. */
  async afterWrite(): Promise<void> {
    if ((await this.readTotal()) > this.budget) this.track(this.evict())
  }

  /** Deletes what has outlived its keep time (the trigger deletes the entries themselves), a page at a time. */
  async sweep(): Promise<void> {
    await deleteIndexWhere(this.query, 'keep_until <= ?', Date.now())
    await this.readTotal()
    this.scheduleVacuum()
  }

  async readTotal(): Promise<number> {
    const [row] = await this.query<{ bytes: number }>(`SELECT bytes FROM ${TOTAL}`)
    this.bytes = row?.bytes ?? 0
    return this.bytes
  }

  /** Deletes the least recently used entries until the total is within the budget; one run at a time. */
  evict(): Promise<void> {
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
        this.scheduleVacuum()
        if (left <= this.budget) break
        // Another page: the statements are synchronous, so requests run first; the total is read
        // again after, as writes landed meanwhile.
        await nextTurn()
        total = await this.readTotal()
      }
    })().finally(() => (this.evicting = undefined))
    return this.evicting
  }

  touch(key: string): void {
    this.touches.set(key, Date.now())
    if (this.touches.size >= MAX_TOUCHES) this.track(this.flushTouches())
    else this.touchTimer ??= setTimeout(() => this.track(this.flushTouches()), TOUCH_FLUSH_MS).unref()
  }

  /** A deleted or purged key's recorded read is dropped. */
  forget(key: string): void {
    this.touches.delete(key)
  }

  async flushTouches(): Promise<void> {
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
  scheduleVacuum(): void {
    this.vacuumTimer ??= setTimeout(() => void this.vacuum(), VACUUM_DELAY_MS).unref()
  }

  /** On close: a vacuum that was scheduled runs now if the file is open (`run`), and no timer is left. */
  async close(run: boolean): Promise<void> {
    if (run && this.vacuumTimer) await this.vacuum()
    clearTimeout(this.vacuumTimer)
    this.vacuumTimer = undefined
  }

  private vacuum(): Promise<void> {
    clearTimeout(this.vacuumTimer)
    this.vacuumTimer = undefined
    return this.query('PRAGMA incremental_vacuum').then(
      () => undefined,
      () => undefined,
    )
  }
}
