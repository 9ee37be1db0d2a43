/**
 * Cache defects found by review (each test seen failing on the code before its fix):
 * - a refreshed entry too large to store left the old one in place, served STALE forever;
 * - a `purge` process evicted unrelated entries down to its own (default or smaller) size bound;
 * - a statement waiting on another process's write lock froze the event loop (node:sqlite is synchronous).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import request from 'supertest'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { silentLogger, testSidecar } from '../helpers/sidecar.js'
import { runCliToExit } from '../helpers/cli.js'
import { SqliteStore } from '../../sidecar/cache/sqlite-store.js'
import { frozenClock } from '../helpers/clock.js'
import { image } from '../helpers/image-url.js'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import type { Sidecar } from '../../sidecar/server/app.js'

let upstream: UpstreamServer
let redis: PrivateRedis
const tmp = (name: string) => join(mkdtempSync(join(tmpdir(), `nis-${name}-`)), 'cache.sqlite')
const get = (s: Sidecar, path: string) => request(s.app).get(path).set('Accept', 'image/webp')

before(async () => {
  upstream = await startUpstream()
  redis = await PrivateRedis.start()
})
after(async () => {
  await upstream.close()
  await redis.kill()
})

for (const [name, cache, hotCacheSize] of [
  ['SQLite with a hot tier', 'sqlite', undefined],
  ['SQLite alone', 'sqlite', 0],
  ['memory', 'memory://', undefined],
  ['Redis', 'redis', 0],
] as const) {
  test(`${name}: a refreshed image too large to store replaces the old entry (no STALE old image forever)`, async (t) => {
    const clock = frozenClock()
    t.after(clock.restore)
    const key = `grows-${name.replace(/\W/g, '')}`
    upstream.mutable.set(key, { status: 200, body: corpusFile('png/palette-color.png'), headers: { 'content-type': 'image/png' } })
    const s = testSidecar({
      frontend: upstream.url,
      cache: cache === 'sqlite' ? `sqlite://${tmp('grows')}` : cache === 'redis' ? redis.url : cache,
      cachePrefix: uniquePrefix('grows'),
      cacheMaxEntrySize: 50_000,
      ...(hotCacheSize !== undefined ? { hotCacheSize } : {}),
      nextConfig: { images: { minimumCacheTTL: 1 } },
    })
    t.after(() => s.close())
    const path = image(`/mutable/${key}`, 64)
    const first = await get(s, path)
    assert.equal(first.status, 200)
    assert.equal(first.headers['content-type'], 'image/webp')
    // The source becomes an animated GIF of 136 KB (served as is): over the entry bound.
    upstream.mutable.set(key, { status: 200, body: corpusFile('gif-animated/flowers-3-frames.gif'), headers: { 'content-type': 'image/gif' } })
    clock.advance(1001)
    assert.equal((await get(s, path)).headers['x-nextjs-cache'], 'STALE')
    await s.idle()
    const next = await get(s, path)
    assert.equal(next.status, 200)
    assert.equal(next.headers['content-type'], 'image/gif', 'the old image is still served')
    assert.equal(next.headers['x-nextjs-cache'], 'MISS')
  })
}

/** The real CLI, to its exit. */
const runCli = (args: string[], env: Record<string, string> = {}) => runCliToExit(args, env, 60_000)

const variantEntry = (i: number) => ({
  buffer: Buffer.alloc(20_000, i % 256),
  contentType: 'image/webp',
  maxAge: 3600,
  expireAt: Date.now() + 3_600_000,
  etag: `e${i}`,
  upstreamEtag: `u${i}`,
  validators: {},
  variant: { href: `/img/${i}.png`, width: 64, quality: 75, mimeType: 'image/webp' },
})

test('a purge process with a smaller bound than the file removes only what it purges, not entries evicted to its own bound (real CLI)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nis-purge-bound-'))
  const path = join(dir, 'cache.sqlite')
  // The server's bound: 8 MB; 200 entries of 20 kB (4 MB) fit.
  const server = new SqliteStore(path, { maxSize: 8_000_000, maxEntrySize: 1_000_000 }, silentLogger)
  for (let i = 0; i < 200; i++) await server.set(`k${i}`, variantEntry(i) as never, 3_600_000)
  await server.close()
  // The purge process reads a next.config whose disk cache bound (1 MB) is a quarter of the file.
  const config = join(dir, 'next.config.js')
  writeFileSync(config, 'module.exports = { images: { maximumDiskCacheSize: 1000000 } }\n')
  const run = await runCli(['purge', '/img/1.png', '--cache', `sqlite://${path}`, '--config', config])
  assert.equal(run.code, 0, run.stderr)
  const reopened = new SqliteStore(path, { maxSize: 8_000_000, maxEntrySize: 1_000_000 }, silentLogger)
  try {
    const missing: number[] = []
    for (let i = 0; i < 200; i++) if (i !== 1 && !(await reopened.get(`k${i}`))) missing.push(i)
    assert.deepEqual(missing, [], `${missing.length} unrelated entries of 199 were removed by the purge`)
    assert.equal(await reopened.get('k1'), undefined, 'the purged source is still cached')
  } finally {
    await reopened.close()
  }
})

/**
 * The longest the event loop went without running a 10 ms interval timer, from `start()` to `stop()`
 * (monitorEventLoopDelay did not record a 1.5 s block here on Node 26: its max stayed at 10 ms).
 */
function loopStalls(): { stop(): number } {
  let last = performance.now()
  let max = 0
  const timer = setInterval(() => {
    const now = performance.now()
    max = Math.max(max, now - last)
    last = now
  }, 10)
  return {
    stop() {
      clearInterval(timer)
      return Math.max(max, performance.now() - last)
    },
  }
}

/**
 * A child process holding the file's write lock for `holdMs` (BEGIN IMMEDIATE, a write, a blocking
 * sleep, COMMIT) through node:sqlite; resolves once it holds it, and `done` once it committed.
 */
async function holdWriteLock(path: string, holdMs: number): Promise<{ done: Promise<unknown> }> {
  const script = `
    const { DatabaseSync } = require('node:sqlite')
    const db = new DatabaseSync(${JSON.stringify(path)})
    db.exec('BEGIN IMMEDIATE')
    db.exec("INSERT INTO next_image_cache_readers (id, mark, seen) VALUES ('lock-holder', 0, 0) ON CONFLICT (id) DO NOTHING")
    process.stdout.write('locked\\n')
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ${holdMs})
    db.exec('COMMIT')
    db.close()`
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = once(child, 'exit')
  let out = ''
  for await (const chunk of child.stdout!) if ((out += chunk.toString()).includes('locked')) break
  assert.match(out, /locked/, 'the child did not take the lock')
  return { done: exited }
}

test('a write waiting on another process\'s write lock does not block the event loop (it waits on a timer)', async (t) => {
  const path = tmp('locked')
  const store = new SqliteStore(path, { maxSize: 8_000_000, maxEntrySize: 1_000_000 }, silentLogger)
  await store.set('before', variantEntry(0) as never, 3_600_000)
  const { done } = await holdWriteLock(path, 3000)
  const stalls = loopStalls()
  try {
    const written = store.set('during', { ...variantEntry(1), variant: undefined } as never, 3_600_000)
    // A read meanwhile answers (WAL: readers never wait on a writer).
    assert.ok(await store.get('before'))
    await written
    await done
    const maxMs = stalls.stop()
    assert.ok(await store.get('during'), 'the write did not land once the lock was released')
    t.diagnostic(`longest stall: ${maxMs.toFixed(0)} ms`)
    // Before: the write waited inside SQLite (busy_timeout 5000) for the whole hold (3 s), the loop frozen;
    // the bound is half of it, so a loaded machine's own stalls do not count as that.
    assert.ok(maxMs < 1500, `the event loop stalled ${maxMs.toFixed(0)} ms while another process held the write lock`)
  } finally {
    stalls.stop()
    await store.close()
  }
})

/** A cache file of `n` entries of 200 bytes (indexed, kept until `keepUntil`), written in one transaction. */
async function filledFile(n: number, keepUntil: number): Promise<string> {
  const path = tmp('filled')
  const store = new SqliteStore(path, { maxSize: 1e9, maxEntrySize: 1e6 }, silentLogger)
  await store.ping()
  await store.close()
  const db = new DatabaseSync(path)
  const numbers = `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${n})`
  db.exec(`BEGIN;
    ${numbers} INSERT INTO next_image_cache (key, value) SELECT 'filler' || i, zeroblob(200) FROM n;
    ${numbers} INSERT INTO next_image_cache_lru (key, size, keep_until, used) SELECT 'filler' || i, 200, ${keepUntil}, i FROM n;
    COMMIT`)
  db.close()
  return path
}

test('the expiry sweep at open deletes a large expired file in pages, the event loop running between them', async (t) => {
  const path = await filledFile(150_000, 1000)
  const store = new SqliteStore(path, { maxSize: 1e9, maxEntrySize: 1e6 }, silentLogger)
  const stalls = loopStalls()
  try {
    await store.ping()
    const maxMs = stalls.stop()
    assert.equal(store.size, 0, 'the expired entries were not swept')
    t.diagnostic(`longest stall: ${maxMs.toFixed(0)} ms`)
    // Before: one DELETE of the 150,000 rows, 1.7 s of frozen loop here (2.4 s measured by review on a larger file);
    // in pages, about 200 ms (the open's full-table checks). 1 s lies between, clear of a loaded machine's noise.
    assert.ok(maxMs < 1000, `the event loop stalled ${maxMs.toFixed(0)} ms during the sweep at open`)
  } finally {
    stalls.stop()
    await store.close()
  }
})

test('`purge --all` from the real CLI on a large file does not stall a serving process on the same file', async (t) => {
  const path = await filledFile(150_000, Date.now() + 3_600_000)
  const store = new SqliteStore(path, { maxSize: 1e9, maxEntrySize: 1e6 }, silentLogger)
  await store.ping()
  const stalls = loopStalls()
  let writes = 0
  try {
    const purge = runCli(['purge', '--all', '--cache', `sqlite://${path}`])
    // Serving meanwhile: a hit and a write (each needs the write lock) on every turn until the purge ends.
    let ended = false
    void purge.finally(() => (ended = true))
    while (!ended) {
      await store.set(`served${writes}`, { ...variantEntry(writes), variant: undefined } as never, 3_600_000)
      assert.ok(await store.get(`served${writes++}`))
      await new Promise((resolve) => setImmediate(resolve))
    }
    const run = await purge
    const maxMs = stalls.stop()
    assert.equal(run.code, 0, run.stderr)
    assert.ok(writes > 0)
    t.diagnostic(`longest stall: ${maxMs.toFixed(0)} ms over ${writes} writes and hits`)
    // Before: a write waited inside SQLite behind the purge's single DELETE, the loop frozen (3 s measured by review);
    // in pages, 180-270 ms here. 1 s lies between, clear of a loaded machine's noise.
    assert.ok(maxMs < 1000, `the serving process's event loop stalled ${maxMs.toFixed(0)} ms during the purge (${writes} writes)`)
  } finally {
    stalls.stop()
    await store.close()
  }
})
