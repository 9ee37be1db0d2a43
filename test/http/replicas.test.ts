/** Real replicas: separate sidecar processes (the CLI) sharing one Redis; and Redis dying under load. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import request from 'supertest'
import { createClient } from '@redis/client'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { startCli } from '../helpers/cli.js'
import { testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { waitUntil } from '../helpers/wait.js'
import { image } from '../helpers/image-url.js'

let upstream: UpstreamServer

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

test('two sidecar processes sharing Redis: a herd of 64 identical cold requests costs one transform', async () => {
  const prefix = uniquePrefix('processes')
  const redis = await PrivateRedis.start()
  const args = ['--frontend', upstream.url, '--cache', redis.url, '--cache-prefix', prefix, '--max-attempts', '1']
  const replicas = await Promise.all([startCli(args), startCli(args)])
  try {
      const path = image('/corpus/photo-jpeg/garden-progressive.jpg', 1920)
      const responses = await Promise.all(
        Array.from({ length: 64 }, (_, i) => fetch(`${replicas[i % 2]!.url}${path}`, { headers: { accept: 'image/webp' } }).then(async (r) => ({ status: r.status, etag: r.headers.get('etag'), body: Buffer.from(await r.arrayBuffer()) }))),
      )
      assert.ok(responses.every((r) => r.status === 200))
      assert.equal(new Set(responses.map((r) => r.etag)).size, 1)
      let transforms = 0
      for (const { url } of replicas) transforms += metric(await (await fetch(`${url}/metrics`)).text(), 'next_image_sidecar_transforms_total')
      assert.equal(transforms, 1)
  } finally {
    for (const { child } of replicas) child.kill('SIGTERM')
    await redis.kill()
  }
})

test('Redis killed mid-load: no request fails, and entries land in Redis again once it is back', async () => {
  const redis = await PrivateRedis.start()
  const prefix = uniquePrefix('outage')
  const s = testSidecar({ frontend: upstream.url, cache: redis.url, cachePrefix: prefix, hotCacheSize: 0 })
  const variants = ['png/chelsea.png', 'png/coffee.png', 'photo-jpeg/rocket.jpg', 'png-alpha/debian-logo-256.png'].flatMap((f) => [64, 128, 256].map((w) => image(`/corpus/${f}`, w)))
  const statuses: number[] = []
  let stop = false
  const load = Promise.all(
    Array.from({ length: 4 }, async (_, worker) => {
      for (let i = worker; !stop; i++) {
        statuses.push((await request(s.app).get(variants[i % variants.length]!).set('Accept', 'image/webp')).status)
      }
    }),
  )
  // Reads and writes recover apart (each by its own probe): "up" is both, "down" is either.
  const storeUp = async () => Math.min(...(await s.metrics.storeUp.get()).values.map((v) => v.value))
  // However the test ends, the load stops and the sidecar and Redis go (a failure must not leave the
  // load loop running: the file would never end).
  try {
  await waitUntil(() => statuses.length >= 8, 'load before the outage')
  await redis.kill()
  const atKill = statuses.length
  await waitUntil(async () => (await storeUp()) === 0 && statuses.length >= atKill + 12, 'the outage noticed and requests served through it')
  await redis.restart()
  const atRestart = statuses.length
  await waitUntil(async () => (await storeUp()) === 1 && statuses.length >= atRestart + 12, 'the store back and requests served after it')
  stop = true
  await load
  assert.ok(statuses.length > 20, `only ${statuses.length} requests ran`)
  assert.deepEqual([...new Set(statuses)], [200], `statuses: ${JSON.stringify(statuses)}`)

  // Back: a new variant is stored in Redis again (the store recovers by itself).
  const client = createClient({ url: redis.url })
  await client.connect()
  await client.flushAll()
  const fresh = image('/corpus/photo-jpeg/camera-gray.jpg', 96)
  assert.equal((await request(s.app).get(fresh).set('Accept', 'image/webp')).status, 200)
  // The entry (its source's purge index and the purge listeners' list aside).
  const stored = (await client.keys(`${prefix}*`)).filter((k) => !k.startsWith(`${prefix}src:`) && !k.startsWith(`${prefix}{purge}`))
  await client.close()
  assert.equal(stored.length, 1, 'the new variant was stored in Redis after it came back')
  } finally {
    stop = true
    await load
    await s.close()
    await redis.kill()
  }
})
