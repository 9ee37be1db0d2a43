/**
 * The SQLite store killed mid-write (issue 33): an entry, its LRU index row and its source row are
 * written as one transaction, so a kill -9 at any moment of a load of misses leaves either all three
 * or none. An entry without its source row is one no purge of its source or prefix finds through the
 * index; an entry without its index row is one the LRU neither counts nor evicts. A transaction that
 * fails part-way keeps none of its statements and says why it failed.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { DatabaseSync } from 'node:sqlite'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { startCli, stopChild } from '../helpers/cli.js'
import { waitUntil } from '../helpers/wait.js'
import { setUpCacheFile, KeyvNodeSqlite } from '../../sidecar/cache/node-sqlite.js'

let upstream: UpstreamServer
const dir = mkdtempSync(join(tmpdir(), 'nis-crash-'))
const file = join(dir, 'cache.sqlite')

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
  rmSync(dir, { recursive: true, force: true })
})

/** Takes the file's write lock for 2 ms at a time, again as soon as it can, until killed. */
const LOCK_HOLDER = `
import { DatabaseSync } from 'node:sqlite'
const db = new DatabaseSync(process.argv[1])
db.exec('PRAGMA busy_timeout = 0')
const pause = new Int32Array(new SharedArrayBuffer(4))
for (;;) {
  try { db.exec('BEGIN IMMEDIATE') } catch { continue }
  Atomics.wait(pause, 0, 0, 2)
  db.exec('COMMIT')
}
`

/** Rows of keyv's table that lack their index row or their source row. */
function torn(): { entries: number; unindexed: number; sourceless: number } {
  const db = new DatabaseSync(file)
  try {
    const count = (sql: string) => (db.prepare(sql).get() as { n: number }).n
    return {
      entries: count('SELECT count(*) AS n FROM next_image_cache'),
      unindexed: count('SELECT count(*) AS n FROM next_image_cache t WHERE NOT EXISTS (SELECT 1 FROM next_image_cache_lru l WHERE l.key = t.key)'),
      // The store's write probe (ResilientStore) is the one entry that is not an image's.
      sourceless: count(`SELECT count(*) AS n FROM next_image_cache t WHERE key != 'health-probe' AND NOT EXISTS (SELECT 1 FROM next_image_cache_sources s WHERE s.key = t.key)`),
    }
  } finally {
    db.close()
  }
}

test('kill -9 during a load of misses from two processes on the file never leaves an entry without its index row or its source row', async () => {
  const body = corpusFile('tiny/emblem-16.png')
  const widths = [16, 32, 48, 64, 96, 128, 256, 384]
  const ROUNDS = 8
  const args = ['--frontend', upstream.url, '--cache', `sqlite://${file}`, '--hot-cache-size', '0']
  let stored = 0
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < 400; i++) upstream.mutable.set(`c${round}-${i}`, { status: 200, body, headers: { 'content-type': 'image/png' } })
    // Two processes writing one file, and a third taking its write lock whenever it is free (as another
    // worker's eviction or a purge's paged deletes do): a writer waits for it on a timer, between its
    // statements too.
    const processes = await Promise.all([startCli(args), startCli(args)])
    const holder = spawn(process.execPath, ['--input-type=module', '-e', LOCK_HOLDER, file], { stdio: 'ignore' })
    let alive = true
    let done = 0
    // Eight clients per process, each a miss after another (a new source and width each time) until its process dies.
    const clients = processes.flatMap(({ url }, p) =>
      Array.from({ length: 8 }, async (_, c) => {
        for (let n = p * 8 + c; alive; n += 16) {
          const src = `/mutable/c${round}-${Math.floor(n / widths.length) % 400}`
          const res = await fetch(`${url}/_next/image?url=${encodeURIComponent(src)}&w=${widths[n % widths.length]}&q=75`, { headers: { accept: 'image/webp' } }).catch(() => undefined)
          if (!res) return
          await res.arrayBuffer().catch(() => undefined)
          if (res.status === 200) done++
        }
      }),
    )
    try {
      // Killed at a different point of the load each round: after 40, 47, 54 … answers.
      await waitUntil(() => done >= 40 + round * 7, 'misses before the kill', 60_000)
    } finally {
      // Also when the wait fails: a process left running would keep the test file alive.
      await Promise.all([...processes.map(({ child }) => stopChild(child, 'SIGKILL')), stopChild(holder, 'SIGKILL')])
      alive = false
      await Promise.all(clients)
    }
    // Checked before the next processes open the file (a start indexes rows left without an index row).
    const rows = torn()
    assert.equal(rows.unindexed, 0, `round ${round}: ${rows.unindexed} of ${rows.entries} entries have no index row`)
    assert.equal(rows.sourceless, 0, `round ${round}: ${rows.sourceless} of ${rows.entries} entries have no source row`)
    // Writes landed in this round (many time out behind the lock and are dropped, as a busy store's are).
    assert.ok(rows.entries > stored, `round ${round}: no entry stored`)
    stored = rows.entries
  }
})

test('a transaction the disk cannot hold fails with SQLite’s own error (not the rollback’s), and writes none of its statements', async () => {
  const path = join(dir, 'full.sqlite')
  setUpCacheFile(path, 1000)
  const adapter = new KeyvNodeSqlite(path, { table: 'next_image_cache', busyTimeoutMs: 1000 })
  try {
    await adapter.query('CREATE TABLE side (key TEXT PRIMARY KEY)')
    const [{ page_count: pages }] = (await adapter.query('PRAGMA page_count')) as Array<{ page_count: number }>
    // A file that may grow by two pages: the 200 kB value cannot fit (a full disk, as SQLite reports it).
    await adapter.query(`PRAGMA max_page_count = ${pages + 2}`)
    await assert.rejects(
      adapter.transaction([
        ['INSERT INTO side (key) VALUES (?)', 'k'],
        ['INSERT INTO next_image_cache (key, value) VALUES (?, ?)', 'k', Buffer.alloc(200_000)],
      ]),
      (err: Error & { errcode?: number }) => err.errcode === 13 && /full/.test(err.message),
    )
    assert.deepEqual(await adapter.query('SELECT key FROM side'), [], 'the first statement was kept')
    // The connection is usable afterwards (no transaction left open).
    await adapter.transaction([['INSERT INTO side (key) VALUES (?)', 'after']])
    assert.deepEqual((await adapter.query('SELECT key FROM side')).map((r) => ({ ...(r as object) })), [{ key: 'after' }])
  } finally {
    await adapter.disconnect()
  }
})
