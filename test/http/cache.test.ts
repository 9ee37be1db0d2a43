/** The cache layer: stores, bounds, revalidation, single flight, load shedding, metrics. */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, statSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import request from 'supertest'
import { createClient } from '@redis/client'
import { KeyvNodeSqlite } from '../../sidecar/cache/node-sqlite.js'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { frozenClock } from '../helpers/clock.js'
import { waitUntil } from '../helpers/wait.js'
import type { Sidecar } from '../../sidecar/server/app.js'
import { SqliteStore } from '../../sidecar/cache/sqlite-store.js'
import { encodeEntry } from '../../sidecar/cache/codec.js'
import { pino } from 'pino'
import { createHash } from 'node:crypto'
import { image } from '../helpers/image-url.js'

let upstream: UpstreamServer
const tmp = (name: string) => join(mkdtempSync(join(tmpdir(), `nis-${name}-`)), 'cache.sqlite')
const get = (s: Sidecar, path: string) => request(s.app).get(path).set('Accept', 'image/webp')
const metrics = async (s: Sidecar) => (await request(s.app).get('/metrics')).text

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

describe('SQLite store', () => {
  test('values are stored as binary, not base64', async () => {
    const path = tmp('binary')
    const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${path}` })
    const res = await get(s, image('/corpus/photo-jpeg/rocket.jpg', 640))
    await s.close()
    const db = new KeyvNodeSqlite(path, { table: 'next_image_cache', busyTimeoutMs: 5000 })
    const [row] = (await db.query('SELECT length(value) AS size, typeof(value) AS type FROM next_image_cache')) as Array<{ size: number; type: string }>
    await db.disconnect()
    assert.equal(row!.type, 'blob')
    const body = Number(res.headers['content-length'])
    assert.ok(row!.size >= body && row!.size < body + 1024, `stored ${row!.size} bytes for a ${body}-byte image`)
  })

  test('eviction keeps the file under its bound while serving a larger working set', async () => {
    const path = tmp('evict')
    const bound = 400_000
    const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${path}`, cacheMaxSize: bound, hotCacheSize: 0 })
    const files = ['photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/aqua.jpg', 'photo-jpeg/ladybird.jpg', 'png/silk.png', 'photo-jpeg/green-meadow.jpg']
    let served = 0
    for (const file of files) {
      for (const w of [1080, 1200, 1920]) {
        const res = await request(s.app).get(image(`/corpus/${file}`, w)).set('Accept', '*/*')
        assert.equal(res.status, 200)
        served += Number(res.headers['content-length'])
      }
    }
    await s.close() // finishes the pending evictions and their vacuum
    const onDisk = statSync(path).size + (existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0)
    assert.ok(served > bound * 2, `working set ${served} should exceed the bound ${bound}`)
    assert.ok(statSync(path).size <= bound, `database file is ${statSync(path).size} bytes, bound ${bound} (wal included: ${onDisk})`)
  })

  test('two cluster workers writing one file keep it within the whole budget, and both see one index of every row', async () => {
    const path = tmp('shared')
    const bound = 400_000
    const log = pino({ level: 'silent' })
    const workers = [0, 1].map((index) => new SqliteStore(path, { maxSize: bound, maxEntrySize: bound }, log, { index, count: 2 }))
    const key = (i: number) => createHash('sha256').update(String(i)).digest('base64url')
    const entry = (i: number) => ({ buffer: Buffer.alloc(20_000, i), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 60_000, etag: `e${i}`, upstreamEtag: `u${i}` })
    // 60 entries of 20 kB (1.2 MB) written alternately by the two workers, a third also read by the other one.
    for (let i = 0; i < 60; i++) {
      await workers[i % 2]!.set(key(i), entry(i), 3_600_000)
      if (i % 3 === 0) await workers[(i + 1) % 2]!.get(key(i))
    }
    await Promise.all(workers.map((w) => w.close())) // finishes the pending deletions and their vacuum
    const db = new KeyvNodeSqlite(path, { table: 'next_image_cache', busyTimeoutMs: 5000 })
    const [row] = (await db.query('SELECT count(*) AS n, sum(length(value)) AS bytes FROM next_image_cache')) as Array<{ n: number; bytes: number }>
    await db.disconnect()
    assert.ok(row!.bytes <= bound, `rows hold ${row!.bytes} bytes, bound ${bound}`)
    assert.ok(row!.n >= 5, `kept ${row!.n} entries`)
    // The index is in the file, shared: after a restart each worker counts every row, once.
    const reopened = [0, 1].map((index) => new SqliteStore(path, { maxSize: bound, maxEntrySize: bound }, log, { index, count: 2 }))
    await Promise.all(reopened.map((w) => w.ping()))
    for (const w of reopened) assert.equal(w.size, row!.bytes)
    await Promise.all(reopened.map((w) => w.close()))
  })

  test('a file written before the index: fresh entries are indexed and served, expired and foreign rows deleted', async () => {
    const path = tmp('unindexed')
    const log = pino({ level: 'silent' })
    const key = (i: number) => createHash('sha256').update(`old ${i}`).digest('base64url')
    const entry = (i: number) => ({ buffer: Buffer.alloc(1000, i), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 60_000, etag: `e${i}`, upstreamEtag: `u${i}` })
    // The layout of an older file: keyv's table alone, written directly.
    const db = new KeyvNodeSqlite(path, { table: 'next_image_cache', busyTimeoutMs: 5000 })
    for (let i = 0; i < 3; i++) await db.set(key(i), encodeEntry(entry(i), Date.now() + 3_600_000))
    await db.set(key(3), encodeEntry(entry(3), Date.now() - 1000)) // past its keep time
    await db.set(key(4), Buffer.from('not an entry of ours'))
    await db.set(key(5), 'a string from an old format')
    await db.disconnect()
    const store = new SqliteStore(path, { maxSize: 1_000_000, maxEntrySize: 1_000_000 }, log)
    await store.ping()
    const fresh = encodeEntry(entry(0), Date.now() + 3_600_000).byteLength
    assert.equal(store.size, 3 * fresh)
    assert.deepEqual((await store.get(key(1)))?.buffer, entry(1).buffer)
    await store.close()
    const check = new KeyvNodeSqlite(path, { table: 'next_image_cache', busyTimeoutMs: 5000 })
    const rows = (await check.query('SELECT key FROM next_image_cache ORDER BY rowid')) as Array<{ key: string }>
    await check.disconnect()
    assert.deepEqual(rows.map((r) => r.key), [key(0), key(1), key(2)])
  })

  test('eviction takes the least recently used entries: one read since it was written outlives older unread ones', async () => {
    const path = tmp('lru')
    const log = pino({ level: 'silent' })
    const clock = frozenClock()
    try {
      const key = (i: number) => createHash('sha256').update(`lru ${i}`).digest('base64url')
      const entry = (i: number) => ({ buffer: Buffer.alloc(10_000, i), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 60_000, etag: `e${i}`, upstreamEtag: `u${i}` })
      // Room for four entries (the budget is 85% of the size less one WAL page: sqliteBudget).
      const store = new SqliteStore(path, { maxSize: 55_000, maxEntrySize: 55_000 }, log)
      for (let i = 0; i < 4; i++) {
        await store.set(key(i), entry(i), 3_600_000)
        clock.advance(1000)
      }
      assert.ok(await store.get(key(0)), 'the oldest entry, read now')
      clock.advance(1000)
      await store.set(key(4), entry(4), 3_600_000)
      await store.close() // finishes the eviction
      const reopened = new SqliteStore(path, { maxSize: 55_000, maxEntrySize: 55_000 }, log)
      assert.ok(await reopened.get(key(0)), 'the entry read recently is kept')
      assert.equal(await reopened.get(key(1)), undefined, 'the least recently used entry is evicted')
      assert.ok(await reopened.get(key(4)))
      await reopened.close()
    } finally {
      clock.restore()
    }
  })

  test('an entry over the size limit is served but not stored', async () => {
    const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${tmp('max-entry')}`, cacheMaxEntrySize: 1000, hotCacheSize: 0 })
    const first = await get(s, image('/corpus/photo-jpeg/rocket.jpg', 640))
    assert.equal(first.status, 200)
    assert.ok(Number(first.headers['content-length']) > 1000)
    assert.equal((await get(s, image('/corpus/photo-jpeg/rocket.jpg', 640))).headers['x-nextjs-cache'], 'MISS')
    await s.close()
  })

  test('an unwritable cache directory degrades to serving without a cache', async () => {
    // A path below a regular file: no directory can ever be created there, not even by root.
    const s = testSidecar({ frontend: upstream.url, cache: 'sqlite:///etc/hostname/cache.sqlite' })
    assert.equal((await get(s, image('/corpus/png/chelsea.png', 64))).status, 200)
    assert.equal((await get(s, image('/corpus/png/chelsea.png', 64))).status, 200)
    // Readiness means "can serve": the store's failure shows in its metric, not in /readyz.
    assert.equal((await request(s.app).get('/readyz')).status, 200)
    assert.equal(metric(await metrics(s), 'next_image_sidecar_cache_store_up', { op: 'read' }), 0)
    assert.equal(metric(await metrics(s), 'next_image_sidecar_cache_store_up', { op: 'write' }), 0)
    await s.close()
  })

  test('a healthy store reports cache_store_up 1', async () => {
    const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${tmp('healthy')}` })
    assert.equal((await get(s, image('/corpus/png/chelsea.png', 64))).status, 200)
    assert.equal((await request(s.app).get('/readyz')).status, 200)
    assert.equal(metric(await metrics(s), 'next_image_sidecar_cache_store_up', { op: 'read' }), 1)
    assert.equal(metric(await metrics(s), 'next_image_sidecar_cache_store_up', { op: 'write' }), 1)
    await s.close()
  })
})

describe('revalidation', () => {
  test('an unchanged source is revalidated with a conditional request and not encoded again', async (t) => {
    const clock = frozenClock()
    t.after(clock.restore)
    upstream.mutable.set('conditional', { status: 200, body: corpusFile('png/coffee.png'), headers: { etag: '"v1"' } })
    const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { minimumCacheTTL: 1 } } })
    const path = image('/mutable/conditional', 256)
    const first = await get(s, path)
    clock.advance(1001)
    assert.equal((await get(s, path)).headers['x-nextjs-cache'], 'STALE')
    await s.idle()
    const seen = upstream.requests.filter((r) => r.url === '/mutable/conditional')
    assert.equal(seen.at(-1)!.headers['if-none-match'], '"v1"')
    const text = await metrics(s)
    assert.equal(metric(text, 'next_image_sidecar_transforms_total'), 1)
    assert.equal(metric(text, 'next_image_sidecar_upstream_fetches_total', { outcome: 'not_modified' }), 1)
    const after = await get(s, path)
    assert.equal(after.headers['x-nextjs-cache'], 'HIT')
    assert.equal(after.headers.etag, first.headers.etag)
    await s.close()
  })
})

describe('single flight', () => {
  test('64 simultaneous identical cold requests: one fetch, one transform, the same bytes for all', async () => {
    const s = testSidecar({ frontend: upstream.url })
    const path = image('/corpus/photo-jpeg/garden.jpg', 1080)
    const responses = await Promise.all(Array.from({ length: 64 }, () => get(s, path)))
    assert.ok(responses.every((r) => r.status === 200))
    assert.equal(new Set(responses.map((r) => r.headers.etag)).size, 1)
    const text = await metrics(s)
    assert.equal(metric(text, 'next_image_sidecar_transforms_total'), 1)
    assert.equal(metric(text, 'next_image_sidecar_upstream_fetches_total'), 1)
    assert.equal(metric(text, 'next_image_sidecar_cache_requests_total', { result: 'miss' }), 64)
    await s.close()
  })
})

describe('Redis store', () => {
  let redis: PrivateRedis
  before(async () => {
    redis = await PrivateRedis.start()
  })
  after(() => redis.kill())
  test('entries land in Redis under the prefix with a TTL, and another replica gets a HIT', async () => {
    const prefix = uniquePrefix('redis')
    const a = testSidecar({ frontend: upstream.url, cache: redis.url, cachePrefix: prefix })
    const b = testSidecar({ frontend: upstream.url, cache: redis.url, cachePrefix: prefix })
    const path = image('/corpus/photo-jpeg/rocket.jpg', 256)
    const first = await get(a, path)
    assert.equal(first.headers['x-nextjs-cache'], 'MISS')
    const second = await get(b, path)
    assert.equal(second.headers['x-nextjs-cache'], 'HIT')
    assert.equal(second.headers.etag, first.headers.etag)
    const client = createClient({ url: redis.url })
    await client.connect()
    // The entry, and its source's purge index (a set with a TTL too); the purge listeners' list aside.
    const keys = (await client.keys(`${prefix}*`)).filter((k) => k !== `${prefix}{purge}members`)
    assert.equal(keys.length, 2)
    assert.equal(keys.filter((k) => k === `${prefix}src:/corpus/photo-jpeg/rocket.jpg`).length, 1)
    for (const key of keys) assert.ok((await client.pTTL(key)) > 0)
    await client.close()
    await Promise.all([a.close(), b.close()])
  })
  test('a herd of 64 identical cold requests over two in-process replicas sharing Redis causes one transform in all', async () => {
    const prefix = uniquePrefix('herd')
    const a = testSidecar({ frontend: upstream.url, cache: redis.url, cachePrefix: prefix })
    const b = testSidecar({ frontend: upstream.url, cache: redis.url, cachePrefix: prefix })
    const path = image('/corpus/photo-jpeg/storm.jpg', 1920)
    const responses = await Promise.all(Array.from({ length: 64 }, (_, i) => get(i % 2 ? a : b, path)))
    assert.ok(responses.every((r) => r.status === 200))
    assert.equal(new Set(responses.map((r) => r.headers.etag)).size, 1)
    const transforms = metric(await metrics(a), 'next_image_sidecar_transforms_total') + metric(await metrics(b), 'next_image_sidecar_transforms_total')
    assert.equal(transforms, 1)
    await Promise.all([a.close(), b.close()])
  })
})

describe('load shedding', () => {
  test('a full queue answers 503 with Retry-After and counts the shed requests', async () => {
    // One transform slot admits 32 jobs in flight; with a line of one, the 34th request and beyond are shed.
    const s = testSidecar({ frontend: upstream.url, concurrency: 1, queueSize: 1 })
    const widths = [32, 48, 64, 96, 128, 256, 384, 640, 750, 828, 1080, 1200, 1920, 2048, 3840]
    const files = ['photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/aqua.jpg']
    const responses = await Promise.all(files.flatMap((f) => widths.map((w) => get(s, image(`/corpus/${f}`, w)))))
    const shed = responses.filter((r) => r.status === 503)
    assert.ok(shed.length >= 1, `statuses: ${responses.map((r) => r.status).join(',')}`)
    assert.ok(responses.some((r) => r.status === 200))
    for (const r of shed) assert.equal(r.headers['retry-after'], '1')
    assert.equal(metric(await metrics(s), 'next_image_sidecar_shed_total'), shed.length)
    await s.close()
  })
})

describe('bounded memory', () => {
  test('source bodies are read only as far ahead of the transforms as the queue allows, not for every waiting request', async () => {
    const s = testSidecar({ frontend: upstream.url, concurrency: 1, queueSize: 16 })
    const file = '/corpus/large/elephants-3840x2160.jpg'
    const before = upstream.requests.filter((r) => r.url === file).length
    // Six different variants of one large photo: six jobs, each needing the source.
    // (A supertest request starts when it is awaited: Promise.all starts them all now.)
    let done = false
    const pending = Promise.all([3840, 2048, 1920, 1200, 1080, 828].map((w) => get(s, image(file, w)))).finally(() => (done = true))
    // Sampled all along the run: sources being read or waiting for their transform never exceed
    // the two one transform slot allows (the one transforming and the one read ahead).
    let most = 0
    await waitUntil(async () => {
      most = Math.max(most, metric(await metrics(s), 'next_image_sidecar_sources_held'))
      return done
    }, 'the six variants', 60_000, 5)
    assert.equal(most, 2, `${most} sources held at once with one transform slot`)
    for (const res of await pending) assert.equal(res.status, 200)
    // Each job fetched once, plus once more for each answer dropped unread while no slot was free.
    const deferred = metric(await metrics(s), 'next_image_sidecar_source_deferrals_total')
    assert.equal(upstream.requests.filter((r) => r.url === file).length - before, 6 + deferred)
    await s.close()
  })
})

describe('metrics', () => {
  test('GET /metrics exposes the documented series', async () => {
    const s = testSidecar({ frontend: upstream.url })
    await get(s, image('/corpus/png/chelsea.png', 64))
    await get(s, image('/corpus/png/chelsea.png', 64))
    const text = await metrics(s)
    for (const name of ['next_image_sidecar_transforms_total', 'next_image_sidecar_upstream_fetches_total', 'next_image_sidecar_queue_depth', 'next_image_sidecar_transform_duration_seconds_count', 'next_image_sidecar_shed_total']) {
      assert.match(text, new RegExp(`^${name}`, 'm'), name)
    }
    assert.equal(metric(text, 'next_image_sidecar_cache_requests_total', { result: 'hit' }), 1)
    assert.equal(metric(text, 'next_image_sidecar_cache_requests_total', { result: 'miss' }), 1)
    await s.close()
  })
})

describe('immutable images', () => {
  test('a static media image (max-age of ten years) stays cached in the memory and SQLite stores', async () => {
    for (const cache of ['memory://', `sqlite://${tmp('immutable')}`]) {
      const s = testSidecar({ frontend: upstream.url, cache })
      const path = image('/_next/static/media/chelsea.0123abcd.png', 128)
      assert.equal((await get(s, path)).headers['x-nextjs-cache'], 'MISS')
      assert.equal((await get(s, path)).headers['x-nextjs-cache'], 'HIT', cache)
      await s.close()
    }
  })
})
