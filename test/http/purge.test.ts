/** Purge: every cached variant of a source, several sources, a prefix or all, in every store; final against work in flight. */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import request from 'supertest'
import { KeyvNodeSqlite } from '../../sidecar/cache/node-sqlite.js'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { waitUntil } from '../helpers/wait.js'
import { image } from '../helpers/image-url.js'
import type { Sidecar } from '../../sidecar/server/app.js'

let upstream: UpstreamServer
let redis: PrivateRedis
const tmp = (name: string) => join(mkdtempSync(join(tmpdir(), `nis-purge-${name}-`)), 'cache.sqlite')
const OLD = corpusFile('photo-jpeg/rocket.jpg')
const NEW = corpusFile('photo-jpeg/garden.jpg')
const jpeg = (body: Buffer) => ({ status: 200, body, headers: { 'content-type': 'image/jpeg' } })

before(async () => {
  upstream = await startUpstream()
  redis = await PrivateRedis.start()
})
after(async () => {
  await upstream.close()
  await redis.kill()
})

/** Every variant of one source this test caches: two widths × two formats. */
const variantsOf = (src: string) => [640, 1080].flatMap((w) => ['image/webp', 'image/jpeg'].map((accept) => ({ path: image(src, w), accept })))
async function fetchAll(s: Sidecar, src: string) {
  const out: Array<{ cache: string; body: Buffer }> = []
  for (const { path, accept } of variantsOf(src)) {
    const res = await request(s.app).get(path).set('Accept', accept).buffer(true).parse((r, cb) => {
      const chunks: Buffer[] = []
      r.on('data', (c: Buffer) => chunks.push(c))
      r.on('end', () => cb(null, Buffer.concat(chunks)))
    })
    assert.equal(res.status, 200, `${path} answered ${res.status}`)
    out.push({ cache: String(res.headers['x-nextjs-cache']), body: res.body as Buffer })
  }
  return out
}

const stores = () => [
  { name: 'memory', options: { cache: 'memory://' } },
  { name: 'sqlite', options: { cache: `sqlite://${tmp('store')}` } },
  { name: 'sqlite without a hot tier', options: { cache: `sqlite://${tmp('cold')}`, hotCacheSize: 0 } },
  { name: 'redis', options: { cache: redis.url, cachePrefix: uniquePrefix('purge') } },
  { name: 'redis without a hot tier', options: { cache: redis.url, cachePrefix: uniquePrefix('purge-cold'), hotCacheSize: 0 } },
]

describe('purge through the programmatic API', () => {
  test('one source: every variant a MISS with the new bytes, the other sources still HIT', async () => {
    for (const { name, options } of stores()) {
      const key = `hero-${name.replace(/\W/g, '')}`
      upstream.mutable.set(key, jpeg(OLD))
      upstream.mutable.set(`${key}-other`, jpeg(OLD))
      const s = testSidecar({ frontend: upstream.url, ...options })
      await s.store.ping() // connected first, as the CLI does before it listens
      try {
        const first = await fetchAll(s, `/mutable/${key}`)
        await fetchAll(s, `/mutable/${key}-other`)
        assert.deepEqual((await fetchAll(s, `/mutable/${key}`)).map((r) => r.cache), ['HIT', 'HIT', 'HIT', 'HIT'], name)
        upstream.mutable.set(key, jpeg(NEW))
        const purged = await s.purge({ sources: [`/mutable/${key}`] })
        assert.equal(purged.removed, 4, `${name}: ${JSON.stringify(purged)}`)
        assert.deepEqual(purged.urls.sort(), [image(`/mutable/${key}`, 1080), image(`/mutable/${key}`, 640)], name)
        const after = await fetchAll(s, `/mutable/${key}`)
        assert.deepEqual(after.map((r) => r.cache), ['MISS', 'MISS', 'MISS', 'MISS'], name)
        for (let i = 0; i < after.length; i++) assert.notDeepEqual(after[i]!.body, first[i]!.body, `${name}: variant ${i} still the old bytes`)
        assert.deepEqual((await fetchAll(s, `/mutable/${key}-other`)).map((r) => r.cache), ['HIT', 'HIT', 'HIT', 'HIT'], `${name}: another source was touched`)
        assert.equal((await s.purge({ sources: [`/mutable/${key}`] })).removed, 4, `${name}: the new variants are indexed too`)
      } finally {
        await s.close()
      }
    }
  })

  test('several sources, a prefix, then everything', async () => {
    for (const { name, options } of stores()) {
      const tag = name.replace(/\W/g, '')
      for (const k of ['a', 'b', 'c']) upstream.mutable.set(`prod${tag}-${k}`, jpeg(OLD))
      upstream.mutable.set(`keep${tag}`, jpeg(OLD))
      const s = testSidecar({ frontend: upstream.url, ...options })
      await s.store.ping() // connected first, as the CLI does before it listens
      try {
        const all = [...['a', 'b', 'c'].map((k) => `/mutable/prod${tag}-${k}`), `/mutable/keep${tag}`]
        for (const src of all) await fetchAll(s, src)
        assert.equal((await s.purge({ sources: [all[0]!, all[1]!] })).removed, 8, name)
        assert.deepEqual((await fetchAll(s, all[2]!)).map((r) => r.cache), ['HIT', 'HIT', 'HIT', 'HIT'], name)
        for (const src of all.slice(0, 2)) await fetchAll(s, src)
        const prefix = await s.purge({ prefix: `/mutable/prod${tag}-` })
        assert.equal(prefix.removed, 12, `${name}: ${JSON.stringify(prefix.urls)}`)
        assert.deepEqual((await fetchAll(s, all[3]!)).map((r) => r.cache), ['HIT', 'HIT', 'HIT', 'HIT'], `${name}: outside the prefix`)
        assert.deepEqual((await fetchAll(s, all[0]!)).map((r) => r.cache), ['MISS', 'MISS', 'MISS', 'MISS'], name)
        const everything = await s.purge({ all: true })
        assert.ok(everything.removed >= 8, `${name}: removed ${everything.removed}`)
        for (const src of [all[0]!, all[3]!]) assert.deepEqual((await fetchAll(s, src)).map((r) => r.cache), ['MISS', 'MISS', 'MISS', 'MISS'], name)
      } finally {
        await s.close()
      }
    }
  })

  test('a purge is refused without a selector', async () => {
    const s = testSidecar({ frontend: upstream.url })
    try {
      await assert.rejects(s.purge({}), /purge/)
    } finally {
      await s.close()
    }
  })
})

/** An upstream whose answer the test releases: the source is read when the request arrives, sent when released. */
async function gatedUpstream() {
  let body: Buffer = OLD
  let release: () => void = () => {}
  let gate = new Promise<void>((r) => (release = r))
  let arrived = 0
  const server: Server = createServer(async (_req, res) => {
    const bytes = body
    arrived++
    await gate
    res.writeHead(200, { 'content-type': 'image/jpeg' }).end(bytes)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    arrived: () => arrived,
    change: (next: Buffer) => void (body = next),
    open: () => release(),
    close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
    reset: () => (gate = new Promise<void>((r) => (release = r))),
  }
}

describe('a purge is final against work in flight', () => {
  for (const store of ['sqlite', 'redis'] as const) {
    test(`${store}: a transform of the old source finishing after the purge neither stores nor serves the old bytes`, async () => {
      const gated = await gatedUpstream()
      const cache = store === 'sqlite' ? { cache: `sqlite://${tmp('race')}` } : { cache: redis.url, cachePrefix: uniquePrefix('race') }
      const s = testSidecar({ frontend: gated.url, ...cache })
      // Connected first, as the CLI does before it listens (a store that cannot say where its purge log
      // stands cannot protect the jobs that start meanwhile: see the README).
      await s.store.ping()
      try {
        const path = image('/hero.jpg', 640)
        // The request that fetches the old source, and a waiter on its single flight.
        const inflight = Promise.all([0, 1].map(() => request(s.app).get(path).set('Accept', 'image/webp')))
        await waitUntil(() => gated.arrived() === 1, 'the old source fetch')
        gated.change(NEW)
        await s.purge({ sources: ['/hero.jpg'] })
        gated.open()
        const served = await inflight
        // Both answered after the purge returned: neither may carry the old bytes. The new image's
        // ETag, from a cache purged again (the source is the new one by now):
        await s.purge({ sources: ['/hero.jpg'] })
        const fresh = await request(s.app).get(path).set('Accept', 'image/webp')
        assert.equal(fresh.headers['x-nextjs-cache'], 'MISS')
        for (const res of served) assert.equal(res.headers.etag, fresh.headers.etag, 'an answer given after the purge carried the old bytes')
        assert.equal(gated.arrived(), 3, 'the source was fetched again after the purge (and once more for the reference)')
        // What is stored is the new image.
        const again = await request(s.app).get(path).set('Accept', 'image/webp')
        assert.equal(again.headers['x-nextjs-cache'], 'HIT')
        assert.equal(again.headers.etag, fresh.headers.etag)
      } finally {
        gated.open()
        await s.close()
        await gated.close()
      }
    })
  }
})

describe('the source index', () => {
  test('SQLite: index rows go with their entries when the LRU evicts them (the index stays within the budget)', async () => {
    const path = tmp('index')
    for (const k of ['i1', 'i2', 'i3', 'i4', 'i5', 'i6']) upstream.mutable.set(k, jpeg(corpusFile('photo-jpeg/storm.jpg')))
    const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${path}`, cacheMaxSize: 250_000, hotCacheSize: 0 })
    try {
      for (const k of ['i1', 'i2', 'i3', 'i4', 'i5', 'i6']) await request(s.app).get(image(`/mutable/${k}`, 1920)).set('Accept', 'image/jpeg')
      await waitUntil(async () => {
        const db = new KeyvNodeSqlite(path, { table: 'next_image_cache', busyTimeoutMs: 5000 })
        try {
          const [entries] = (await db.query('SELECT count(*) AS n FROM next_image_cache')) as Array<{ n: number }>
          const [indexed] = (await db.query('SELECT count(*) AS n FROM next_image_cache_sources')) as Array<{ n: number }>
          return entries!.n < 6 && indexed!.n === entries!.n
        } finally {
          await db.disconnect()
        }
      }, 'eviction to take index rows with their entries')
    } finally {
      await s.close()
    }
  })

  test('Redis: the set of a source expires with its entries', async () => {
    const prefix = uniquePrefix('index-ttl')
    upstream.mutable.set('ttl', jpeg(OLD))
    const s = testSidecar({ frontend: upstream.url, cache: redis.url, cachePrefix: prefix })
    const { createClient } = await import('@redis/client')
    const client = createClient({ url: redis.url })
    await client.connect()
    try {
      await request(s.app).get(image('/mutable/ttl', 640)).set('Accept', 'image/webp')
      const keys = await client.keys(`${prefix}*`)
      const sets = keys.filter((k) => k.startsWith(`${prefix}src:`))
      assert.equal(sets.length, 1, `keys: ${keys.join(', ')}`)
      const entry = keys.find((k) => !k.includes(':src:') && !k.includes('lock:') && !k.includes('{purge}'))!
      const [setTtl, entryTtl] = [await client.pTTL(sets[0]!), await client.pTTL(entry)]
      assert.ok(setTtl > 0 && setTtl >= entryTtl - 5000, `set ${setTtl} ms, entry ${entryTtl} ms`)
    } finally {
      await client.quit()
      await s.close()
    }
  })
})
