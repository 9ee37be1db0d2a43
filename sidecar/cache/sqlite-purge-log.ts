import { deleteAll, deleteKeys } from './sqlite-pages.js'
import { OwnRecords } from './purge-log.js'
import { INDEX, PAGE_ROWS, PURGES, READERS, SOURCES, TABLE, type Query } from './sqlite-schema.js'
import { DONE, loggedPurges, markTime, type LoggedPurges, type PurgedEntry, type PurgeSelector, type Variant } from './types.js'

/**
 * A process that has not recorded its position for this long is not waited for by a purge: it stopped
 * (a kill -9 leaves its row), or it cannot read the file, and then its follower dropped its hot tier.
 */
export const READER_SILENT_MS = 30_000

/** Longer than any job may run: a job's mark older than the log is answered from what is left, safely. */
const PURGE_LOG_MS = 24 * 60 * 60 * 1000

/**
 * Purges of the SQLite store and their log, in the file: every process on the file (the workers,
 * the `purge` command) logs its purges there, so a job that began before a purge of its source can
 * tell when it stores (purgedSince), and a sidecar can replay the purges others made to its hot
 * tier (after).
 */
export class SqlitePurgeLog {
  /** Purges this process logged (see after). */
  private readonly own = new OwnRecords()

  constructor(private readonly query: Query) {}

  /**
   * Logs the purge, then deletes the selected index rows (their entries and source rows go by
   * trigger). Sources are found through SOURCES' href index (a prefix as a range on it); only a
   * purge of all touches every row.
   */
  async purge(selector: PurgeSelector, candidates?: Map<string, Variant>): Promise<PurgedEntry[]> {
    const [kind, value] = 'all' in selector ? ['all', ''] : 'prefix' in selector ? ['prefix', selector.prefix] : ['sources', JSON.stringify(selector.sources)]
    const [logged] = await this.query<{ id: number }>(`INSERT INTO ${PURGES} (kind, value, at) VALUES (?, ?, ?) RETURNING id`, kind, value, Date.now())
    if (logged) this.own.add(logged.id)
    type Row = { key: string; href: string | null; width: number; quality: number; mime: string }
    const columns = `${INDEX}.key AS key, href, width, quality, mime`
    let rows: Row[]
    // Deletes in pages (sqlite-pages.ts): one statement over the file froze this process's loop and
    // held the write lock for seconds, every other process's write waiting behind it.
    if ('all' in selector) {
      rows = await deleteAll(this.query)
    } else {
      const where =
        'prefix' in selector
          ? { sql: `href >= ? AND href < ? || char(1114111)`, params: [selector.prefix, selector.prefix] }
          : { sql: `href IN (SELECT value FROM json_each(?))`, params: [JSON.stringify(selector.sources)] }
      rows = await this.query<Row>(`SELECT ${columns} FROM ${SOURCES} JOIN ${INDEX} USING (key) WHERE ${where.sql}`, ...where.params)
      await deleteKeys(this.query, rows.map((r) => r.key))
      if (candidates && candidates.size > 0) rows.push(...(await this.unindexed(rows, candidates)))
    }
    // Logged again once the deletes are done: a process that applied the first record while they ran
    // may have refilled its hot tier from a row not deleted yet, and drops those copies on this one.
    const [done] = await this.query<{ id: number }>(`INSERT INTO ${PURGES} (kind, value, at) VALUES (?, ?, ?) RETURNING id`, `${DONE}${kind}`, value, Date.now())
    if (done) this.own.add(done.id)
    return rows.map((r) => ({ key: r.key, ...(r.href !== null ? { variant: { href: r.href, width: r.width, quality: r.quality, mimeType: r.mime } } : {}) }))
  }

  /**
   * The candidate keys (see candidateKeys) the index did not list that hold an entry — a process killed
   * between its writes, a file from before the index — deleted from the table, a page at a time.
   */
  private async unindexed(indexed: Array<{ key: string }>, candidates: Map<string, Variant>) {
    const known = new Set(indexed.map((r) => r.key))
    const missing = [...candidates.keys()].filter((k) => !known.has(k))
    const found: Array<{ key: string; href: string; width: number; quality: number; mime: string }> = []
    for (let i = 0; i < missing.length; i += PAGE_ROWS) {
      const page = await this.query<{ key: string }>(`DELETE FROM ${TABLE} WHERE key IN (SELECT value FROM json_each(?)) RETURNING key`, JSON.stringify(missing.slice(i, i + PAGE_ROWS)))
      for (const { key } of page) {
        const v = candidates.get(key)!
        found.push({ key, href: v.href, width: v.width, quality: v.quality, mime: v.mimeType })
      }
    }
    return found
  }

  async mark(): Promise<string> {
    const [row] = await this.query<{ id: number | null }>(`SELECT max(id) AS id FROM ${PURGES}`)
    return String(row?.id ?? 0)
  }

  async purgedSince(mark: string, href: string): Promise<boolean> {
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
  async after(mark: string): Promise<{ mark: string } & LoggedPurges> {
    const rows = await this.query<{ id: number; kind: string; value: string }>(`SELECT id, kind, value FROM ${PURGES} WHERE id > ? ORDER BY id`, Number(mark))
    if (rows.length === 0) {
      // A log behind the mark is another file's (the file was replaced or deleted and made anew): what this
      // process holds from the old one may be what a purge of the new one removed.
      // AUTOINCREMENT's counter: it outlives the log's rows (expire), so only another file is behind.
      const [last] = await this.query<{ id: number | null }>(`SELECT max(seq) AS id FROM sqlite_sequence WHERE name = '${PURGES}'`)
      if ((last?.id ?? 0) < Number(mark)) return { mark: String(last?.id ?? 0), selectors: [{ all: true }], completed: [] }
    }
    // This process's own purges were applied here when they were made; replayed, they would mark its
    // new jobs of those sources as overtaken.
    return { mark: String(rows.at(-1)?.id ?? mark), ...loggedPurges(rows.filter((r) => !this.own.take(r.id))) }
  }

  /** Records that `reader` (a process with a hot tier) applied the log up to `mark`. */
  async applied(reader: string, mark: string): Promise<void> {
    await this.query(`INSERT INTO ${READERS} (id, mark, seen) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET mark = excluded.mark, seen = excluded.seen`, reader, Number(mark), Date.now())
  }

  /** The processes seen in the last READER_SILENT_MS, `reader` aside (`live`), and how many of them have not applied `mark` yet. */
  async behind(reader: string | undefined, mark: string): Promise<{ live: number; behind: number }> {
    const [row] = await this.query<{ live: number; behind: number | null }>(
      `SELECT count(*) AS live, sum(mark < ?) AS behind FROM ${READERS} WHERE id != ? AND seen >= ?`,
      Number(mark),
      reader ?? '',
      Date.now() - READER_SILENT_MS,
    )
    return { live: row?.live ?? 0, behind: row?.behind ?? 0 }
  }

  async leave(reader: string): Promise<void> {
    await this.query(`DELETE FROM ${READERS} WHERE id = ?`, reader)
  }

  /** Forgets purges older than any job can be, and processes long gone. */
  async expire(): Promise<void> {
    await this.query(`DELETE FROM ${PURGES} WHERE at < ?`, Date.now() - PURGE_LOG_MS)
    await this.query(`DELETE FROM ${READERS} WHERE seen < ?`, Date.now() - PURGE_LOG_MS)
  }
}
