/**
 * Two store defects found by review: SQLite eviction by several workers on one file deleted the
 * excess once per worker (a burst could empty the cache), and with Redis down every miss left a
 * background lock-release loop although its lock was never taken.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SqliteStore, sqliteBudget } from '../../sidecar/cache/sqlite-store.js'
import { RedisCoordinator } from '../../sidecar/cache/redis-coordinator.js'
import { RedisOfflineError, RedisStore } from '../../sidecar/cache/redis-store.js'
import { freePort } from '../helpers/next-app.js'
import request from 'supertest'
import { silentLogger, testSidecar } from '../helpers/sidecar.js'
import { startUpstream } from '../helpers/upstream-server.js'
import { metric } from '../helpers/metrics.js'
import { image } from '../helpers/image-url.js'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { waitUntil } from '../helpers/wait.js'
import { ResilientStore } from '../../sidecar/cache/resilient-store.js'

const entry = (i: number) => ({ buffer: Buffer.alloc(20_000, i % 256), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 60_000, etag: `e${i}`, upstreamEtag: `u${i}`, validators: {} })

test('two workers evicting one SQLite file together keep it near its budget, not empty', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'nis-evict-')), 'cache.sqlite')
  const limits = { maxSize: 1024 * 1024, maxEntrySize: 16 * 1024 * 1024 }
  const a = new SqliteStore(path, limits, silentLogger, { index: 0, count: 2 })
  await a.ping()
  const b = new SqliteStore(path, limits, silentLogger, { index: 1, count: 2 })
  await b.ping()
  t.after(async () => {
    await a.close()
    await b.close()
  })
  // 600 entries of 20 kB at once, half through each worker: twelve times the budget.
  await Promise.all(Array.from({ length: 600 }, (_, i) => (i % 2 ? a : b).set(`k${i}`, entry(i) as never, 120_000)))
  // Eviction runs in the background, a page of entries at a time with a turn of the event loop between pages.
  const budget = sqliteBudget(limits.maxSize).entries
  await waitUntil(async () => (await a.ping(), a.size <= budget && b.size <= budget), 'the evictions to finish')
  let kept = 0
  for (let i = 0; i < 600; i++) if (await a.get(`k${i}`)) kept++
  // One store alone keeps 44 (0.85 × the budget); two may differ by a few, never by most of it.
  assert.ok(kept >= 30, `only ${kept} entries of ~44 left after eviction`)
  assert.ok(kept * 20_000 <= 1024 * 1024, `${kept} entries exceed the budget`)
  assert.ok(await a.get('k599') ?? await a.get('k598'), 'the newest entries were evicted')
})

test('a lock that Redis never took (store offline) leaves no background release behind', async (t) => {
  const store = new RedisStore(`redis://127.0.0.1:${await freePort()}`, uniquePrefix('offline'), { maxSize: Infinity, maxEntrySize: 1 << 20 }, silentLogger)
  const coordinator = new RedisCoordinator(store, silentLogger)
  t.after(async () => {
    await coordinator.close()
    await store.close()
  })
  for (let i = 0; i < 20; i++) await assert.rejects(coordinator.acquire(`k${i}`, 30_000), RedisOfflineError)
  assert.equal(coordinator.pendingReleases, 0)
})

test('a store whose writes failed is reported writable again once it is, without waiting for a write (a replica serving only hits)', async (t) => {
  const redis = await PrivateRedis.start()
  const health: string[] = []
  const store = new ResilientStore(new RedisStore(redis.url, uniquePrefix('probe'), { maxSize: Infinity, maxEntrySize: 1 << 20 }, silentLogger), silentLogger, {
    backoffMs: 200,
    onHealth: (op, up) => health.push(`${op} ${up ? 'up' : 'down'}`),
  })
  t.after(async () => {
    await store.close()
    await redis.kill()
  })
  await store.ping()
  await redis.kill()
  await store.set('k', entry(1) as never, 60_000)
  assert.equal(store.up('write'), false)
  const back = await PrivateRedis.start({ port: redis.port })
  t.after(() => back.kill())
  // No write follows: only the store's own probe can notice the recovery.
  await waitUntil(() => store.up('write'), 'writes to be reported up again', 15_000)
  assert.deepEqual(health.filter((h) => h.startsWith('write')), ['write down', 'write up'])
})

test('while the store is down a miss is transformed once and kept in the hot tier (the purge log that cannot answer is not taken as a purge)', async (t) => {
  const upstream = await startUpstream()
  t.after(() => upstream.close())
  const s = testSidecar({ frontend: upstream.url, cache: `redis://127.0.0.1:${await freePort()}` })
  t.after(() => s.close())
  const path = image('/corpus/png/chelsea.png', 64)
  const first = await request(s.app).get(path).set('Accept', 'image/webp')
  const second = await request(s.app).get(path).set('Accept', 'image/webp')
  assert.equal(first.status, 200)
  assert.equal(second.headers['x-nextjs-cache'], 'HIT')
  const text = (await request(s.app).get('/metrics')).text
  assert.equal(metric(text, 'next_image_sidecar_transforms_total'), 1)
  assert.equal(upstream.requests.filter((r) => r.url === '/corpus/png/chelsea.png').length, 1)
})

test('a SQLite file that could not be opened at start is opened once it can be (a volume mounted late, space freed)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nis-late-'))
  // A regular file where the cache directory must go: no directory can be made there until it is gone.
  writeFileSync(join(dir, 'volume'), 'not yet')
  const store = new SqliteStore(join(dir, 'volume', 'cache.sqlite'), { maxSize: 1 << 20, maxEntrySize: 1 << 20 }, silentLogger)
  t.after(() => store.close())
  await assert.rejects(store.ping())
  rmSync(join(dir, 'volume'))
  await waitUntil(() => store.ping().then(() => true, () => false), 'the store to open', 10_000, 100)
  await store.set('k', entry(1) as never, 60_000)
  assert.ok(await store.get('k'))
})
