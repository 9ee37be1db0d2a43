/**
 * Purge on Redis Cluster (three masters: the sets of a prefix spread over them) and behind Sentinel:
 * two replicas with hot tiers share the store; one purges a source, a prefix, then all; the other
 * serves every purged variant as a MISS with the new bytes at once, and the other sources as HITs.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import request from 'supertest'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { uniquePrefix } from '../helpers/redis.js'
import { LocalRedisCluster, LocalRedisSentinel } from '../helpers/redis-topologies.js'
import { image } from '../helpers/image-url.js'
import type { Sidecar } from '../../sidecar/server/app.js'

let upstream: UpstreamServer
const OLD = corpusFile('photo-jpeg/rocket.jpg')
const NEW = corpusFile('photo-jpeg/garden.jpg')
const jpeg = (body: Buffer) => ({ status: 200, body, headers: { 'content-type': 'image/jpeg' } })

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

const variants = (src: string) => [640, 1080].flatMap((w) => ['image/webp', 'image/jpeg'].map((accept) => ({ path: image(src, w), accept })))
async function fetchAll(s: Sidecar, src: string) {
  const out: Array<{ cache: string; etag: string }> = []
  for (const { path, accept } of variants(src)) {
    const res = await request(s.app).get(path).set('Accept', accept)
    assert.equal(res.status, 200)
    out.push({ cache: String(res.headers['x-nextjs-cache']), etag: String(res.headers.etag) })
  }
  return out
}

for (const [name, start] of [
  ['Redis Cluster', () => LocalRedisCluster.start()],
  ['Redis Sentinel', () => LocalRedisSentinel.start()],
] as const) {
  test(`${name}: a source, a prefix and all, purged through one replica, are MISSes with the new bytes on the other`, async () => {
    const topology = await start()
    const prefix = uniquePrefix(name.replace(/\W/g, ''))
    const [a, b] = [0, 1].map(() => testSidecar({ frontend: upstream.url, cache: topology.url, cachePrefix: prefix })) as [Sidecar, Sidecar]
    try {
      await Promise.all([a.store.ping(), b.store.ping()])
      const tag = name.replace(/\W/g, '')
      const sources = ['p1', 'p2', 'p3', 'p4', 'keep'].map((k) => `t${tag}${k}`)
      for (const k of sources) upstream.mutable.set(k, jpeg(OLD))
      const before = new Map<string, Array<{ etag: string }>>()
      for (const k of sources) {
        before.set(k, await fetchAll(a, `/mutable/${k}`))
        assert.deepEqual((await fetchAll(b, `/mutable/${k}`)).map((r) => r.cache), ['HIT', 'HIT', 'HIT', 'HIT'])
      }
      const changed = (k: string, after: Array<{ cache: string; etag: string }>) => {
        assert.deepEqual(after.map((r) => r.cache), ['MISS', 'MISS', 'MISS', 'MISS'], k)
        after.forEach((r, i) => assert.notEqual(r.etag, before.get(k)![i]!.etag, `${k}: old bytes`))
      }
      upstream.mutable.set(sources[0]!, jpeg(NEW))
      assert.equal((await a.purge({ sources: [`/mutable/${sources[0]}`] })).removed, 4)
      changed(sources[0]!, await fetchAll(b, `/mutable/${sources[0]}`))
      assert.deepEqual((await fetchAll(b, `/mutable/${sources[1]}`)).map((r) => r.cache), ['HIT', 'HIT', 'HIT', 'HIT'])

      for (const k of sources.slice(1, 4)) upstream.mutable.set(k, jpeg(NEW))
      const byPrefix = await a.purge({ prefix: `/mutable/t${tag}p` })
      // p1 again (cached anew after its own purge) and p2–p4.
      assert.equal(byPrefix.removed, 16, JSON.stringify(byPrefix.urls))
      for (const k of sources.slice(1, 4)) changed(k, await fetchAll(b, `/mutable/${k}`))
      assert.deepEqual((await fetchAll(b, `/mutable/${sources[4]}`)).map((r) => r.cache), ['HIT', 'HIT', 'HIT', 'HIT'], 'outside the prefix')

      upstream.mutable.set(sources[4]!, jpeg(NEW))
      const all = await a.purge({ all: true })
      assert.equal(all.removed, 16, `removed ${all.removed}: ${JSON.stringify(all.variants.map((v) => v.href + " " + v.width + " " + v.mimeType))}`)
      changed(sources[4]!, await fetchAll(b, `/mutable/${sources[4]}`))
    } finally {
      await Promise.all([a.close(), b.close()])
      await topology.stop()
    }
  })
}
