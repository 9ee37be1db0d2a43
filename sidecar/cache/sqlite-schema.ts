/**
 * The embedded store's file layout: keyv's table and, beside it, the LRU index, its byte total, the
 * source index and the purge log, kept in step by triggers; and the one-time indexing of rows from
 * before the index existed. Shared by the store, its LRU and its purge log.
 */
/** keyv's table: key → the encoded entry (codec.ts) as a BLOB. */
export const TABLE = 'next_image_cache'
/** Per entry: its size, keep time and last use; a trigger keeps it in step with TABLE. */
export const INDEX = `${TABLE}_lru`
/** Per entry with a known source: the source and the variant, so a purge finds a source's keys without a scan. */
export const SOURCES = `${TABLE}_sources`
/** The purge log: a job that started before a purge of its source must not store (see ResponseCache). */
export const PURGES = `${TABLE}_purges`
/**
 * Per process with a hot tier on the file: the purge log position it applied, and when it last said so;
 * a purge waits until every process seen lately is past it (see SqlitePurgeLog.behind).
 */
export const READERS = `${TABLE}_readers`
/** One row: the bytes INDEX counts, kept exact by triggers (no scan to know the total). */
export const TOTAL = `${TABLE}_bytes`
/** Rows read or deleted per statement in maintenance: bounds the memory and the time of each. */
export const PAGE_ROWS = 256
/**
 * In SQL, the length of an encoded entry's header (codec.ts: 4 bytes, big-endian), read from its
 * hex digits; NULL beyond 64 KiB (an entry's metadata is a few hundred bytes).
 */
const HEADER_LENGTH = `CASE WHEN substr(value, 1, 2) = x'0000' THEN ${[4096, 256, 16, 1]
  .map((weight, i) => `(instr('0123456789ABCDEF', substr(hex(substr(value, 3, 2)), ${i + 1}, 1)) - 1) * ${weight}`)
  .join(' + ')} END`

/** Runs one SQL statement on the open file. */
export type Query = <T = unknown>(sql: string, ...params: unknown[]) => Promise<T[]>

/**
 * The index beside keyv's table, created if missing (files from before it are indexed at start).
 * Triggers keep it in step: an entry deleted through keyv loses its index row, an index row
 * deleted by eviction or expiry takes its entry with it, and TOTAL follows every change.
 */
export const SCHEMA = [
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
  `CREATE TABLE IF NOT EXISTS ${READERS} (id TEXT PRIMARY KEY, mark INTEGER NOT NULL, seen INTEGER NOT NULL)`,
]

/**
 * Rows without an index row — a file written before INDEX existed, or by a process that
 * stopped between its two writes — are indexed in pages of PAGE_ROWS, oldest first, as least
 * recently used, each page by SQLite alone (their headers never reach JavaScript); what is not
 * an entry of ours or has outlived its keep time is deleted.
 */
export async function indexUnindexedRows(query: Query, share?: { index: number; count: number }): Promise<void> {
  const unindexed = `NOT EXISTS (SELECT 1 FROM ${INDEX} WHERE ${INDEX}.key = ${TABLE}.key)${share ? ` AND ${TABLE}.rowid % ${share.count} = ${share.index}` : ''}`
  let after = 0
  for (;;) {
    const [page] = await query<{ last: number | null }>(
      `SELECT max(id) AS last FROM (SELECT rowid AS id FROM ${TABLE} WHERE rowid > ? AND ${unindexed} ORDER BY rowid LIMIT ${PAGE_ROWS})`,
      after,
    )
    const last = page?.last
    if (last === null || last === undefined) return
    // The row id as the last use: older than any use from now on, in the order rows were written.
    await query(
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
    await query(`DELETE FROM ${TABLE} WHERE rowid > ? AND rowid <= ? AND ${unindexed}`, after, last)
    after = last
  }
}
