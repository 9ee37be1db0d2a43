import { setImmediate as nextTurn } from 'node:timers/promises'
import { INDEX, PAGE_ROWS, SOURCES, TABLE, type Query } from './sqlite-schema.js'

/**
 * Bulk deletes of the SQLite store in pages of PAGE_ROWS rows, one statement each, with a turn of the
 * event loop between pages. node:sqlite is synchronous: one statement over a whole table (a sweep of
 * 100,000 expired entries, a purge of all) held the loop for seconds, and held the file's write lock
 * as long, so another process's write waited behind it. Between pages the other processes write too.
 */

export { nextTurn }

/** Deletes the index rows selected by `where` (their entries and source rows go by trigger), a page at a time. */
export async function deleteIndexWhere(query: Query, where: string, ...params: unknown[]): Promise<void> {
  for (;;) {
    const page = await query(`DELETE FROM ${INDEX} WHERE key IN (SELECT key FROM ${INDEX} WHERE ${where} LIMIT ${PAGE_ROWS}) RETURNING 1`, ...params)
    if (page.length < PAGE_ROWS) return
    await nextTurn()
  }
}

/** Deletes these keys' index rows (their entries and source rows go by trigger), PAGE_ROWS keys per statement. */
export async function deleteKeys(query: Query, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += PAGE_ROWS) {
    if (i > 0) await nextTurn()
    await query(`DELETE FROM ${INDEX} WHERE key IN (SELECT value FROM json_each(?))`, JSON.stringify(keys.slice(i, i + PAGE_ROWS)))
  }
}

type Row = { key: string; href: string | null; width: number; quality: number; mime: string }

/**
 * Every entry there was when it began, deleted a page at a time (the index's, then keyv's rows
 * without one), and returned with its source. An entry written meanwhile has a later row id and
 * stays: its job started after the purge was logged, or finds it there and deletes its entry itself.
 */
export async function deleteAll(query: Query): Promise<Row[]> {
  const [index] = await query<{ last: number | null }>(`SELECT max(rowid) AS last FROM ${INDEX}`)
  const [table] = await query<{ last: number | null }>(`SELECT max(rowid) AS last FROM ${TABLE}`)
  const rows: Row[] = []
  for (let after = 0; ; ) {
    const page = await query<Row & { id: number }>(
      `SELECT ${INDEX}.rowid AS id, ${INDEX}.key AS key, href, width, quality, mime FROM ${INDEX} LEFT JOIN ${SOURCES} USING (key)
       WHERE ${INDEX}.rowid > ? AND ${INDEX}.rowid <= ? ORDER BY ${INDEX}.rowid LIMIT ${PAGE_ROWS}`,
      after,
      index?.last ?? 0,
    )
    if (page.length === 0) break
    await deleteKeys(query, page.map((r) => r.key))
    for (const { id: _, ...row } of page) rows.push(row)
    after = page.at(-1)!.id
    await nextTurn()
  }
  for (;;) {
    const page = await query(`DELETE FROM ${TABLE} WHERE rowid IN (SELECT rowid FROM ${TABLE} WHERE rowid <= ? LIMIT ${PAGE_ROWS}) RETURNING 1`, table?.last ?? 0)
    if (page.length < PAGE_ROWS) return rows
    await nextTurn()
  }
}
