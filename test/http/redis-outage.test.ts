/**
 * A Redis that is down costs nothing: readiness still means "can serve", a command fails at once
 * instead of waiting for a connection, and nothing written while Redis was away lands when it returns.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { createClient } from '@redis/client'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { silentLogger, testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { freePort } from '../helpers/next-app.js'
import { image } from '../helpers/image-url.js'
import { waitUntil } from '../helpers/wait.js'
import { RedisStore } from '../../sidecar/cache/redis-store.js'
import type { CacheEntry } from '../../sidecar/cache/types.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

/** Fails a promise that has not settled within `ms`: a hang is a failure, not a stalled run. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

const MiB = 1024 * 1024
const entry = (): CacheEntry => ({ buffer: Buffer.alloc(MiB, 7), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 60_000, etag: 'e', upstreamEtag: 'u' })

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

test('Redis unreachable: /readyz answers 200 promptly and an image is served', async () => {
  const s = testSidecar({ frontend: upstream.url, cache: 'redis://127.0.0.1:1', hotCacheSize: 0 })
  const server = await s.listen(0, '127.0.0.1')
  try {
    const ready = await within(3000, '/readyz', fetch(`${server.url}/readyz`))
    assert.equal(ready.status, 200)
    const img = await within(20_000, 'an image', fetch(`${server.url}${image('/corpus/png/chelsea.png', 64)}`, { headers: { accept: 'image/webp' } }))
    assert.equal(img.status, 200)
    assert.equal(img.headers.get('content-type'), 'image/webp')
  } finally {
    server.closeAllConnections()
    server.close()
    await s.close()
  }
})

test('Redis unreachable: the outage shows in cache_store_up, not in readiness', async () => {
  const s = testSidecar({ frontend: upstream.url, cache: 'redis://127.0.0.1:1', hotCacheSize: 0 })
  const server = await s.listen(0, '127.0.0.1')
  try {
    assert.equal((await within(3000, '/readyz', fetch(`${server.url}/readyz`))).status, 200)
    await waitUntil(async () => metric(await (await fetch(`${server.url}/metrics`)).text(), 'next_image_sidecar_cache_store_up', { op: 'read' }) === 0, 'cache_store_up{op="read"} 0', 5000, 50)
    assert.equal((await within(3000, '/readyz', fetch(`${server.url}/readyz`))).status, 200)
  } finally {
    server.closeAllConnections()
    server.close()
    await s.close()
  }
})

test('Redis unreachable at start: 100 writes of 1 MiB fail at once and hold no memory; none lands when Redis comes up', async () => {
  const port = await freePort()
  const prefix = uniquePrefix('unreachable-start')
  const store = new RedisStore(`redis://127.0.0.1:${port}`, prefix, { maxSize: Infinity, maxEntrySize: 2 * MiB }, silentLogger)
  gc()
  const before = process.memoryUsage().arrayBuffers
  const writes = Promise.allSettled(Array.from({ length: 100 }, (_, i) => store.set(`k${i}`, entry(), 60_000)))
  // Whatever is still pending keeps its buffer: nothing may be (V8 frees a collected buffer's memory a little later).
  let held = Infinity
  await waitUntil(
    () => {
      gc()
      held = process.memoryUsage().arrayBuffers - before
      return held < 10 * MiB
    },
    'the buffers of 100 failed writes to be freed',
    3000,
    50,
  ).catch(() => assert.fail(`100 writes hold ${(held / MiB).toFixed(1)} MiB`))
  const settled = await within(5000, '100 writes against an unreachable Redis', writes)
  assert.ok(settled.every((s) => s.status === 'rejected'), 'every write failed')

  const redis = await PrivateRedis.start({ port })
  try {
    await waitUntil(() => store.ping().then(() => true, () => false), 'the store to reach Redis', 10_000, 100)
    const client = createClient({ url: redis.url })
    await client.connect()
    const landed = await client.keys(`${prefix}*`)
    await client.close()
    assert.deepEqual(landed, [], 'no stale SET landed once Redis came up')
  } finally {
    await store.close()
    await redis.kill()
  }
})

test('Redis unreachable at start: ping() gives up within its bound instead of waiting for the first connection', async () => {
  const store = new RedisStore(`redis://127.0.0.1:${await freePort()}`, uniquePrefix('ping'), { maxSize: Infinity, maxEntrySize: MiB }, silentLogger)
  try {
    // Rejected by the store itself, not by this test's hang guard.
    const byStore = (err: unknown) => !/no answer within/.test((err as Error).message)
    await assert.rejects(within(5000, 'ping', store.ping()), byStore)
    await assert.rejects(within(5000, 'get', store.get('x')), byStore)
  } finally {
    await store.close()
  }
})

test('Redis killed after start: writes fail at once and none lands when Redis is back', async () => {
  const redis = await PrivateRedis.start()
  const prefix = uniquePrefix('killed')
  const store = new RedisStore(redis.url, prefix, { maxSize: Infinity, maxEntrySize: 2 * MiB }, silentLogger)
  try {
    await store.ping()
    await redis.kill()
    const settled = await within(5000, '100 writes against a dead Redis', Promise.allSettled(Array.from({ length: 100 }, (_, i) => store.set(`k${i}`, entry(), 60_000))))
    assert.ok(settled.every((s) => s.status === 'rejected'))
    await redis.restart()
    await waitUntil(() => store.ping().then(() => true, () => false), 'the store to reach Redis again', 10_000, 100)
    const client = createClient({ url: redis.url })
    await client.connect()
    assert.deepEqual(await client.keys(`${prefix}*`), [])
    await client.close()
  } finally {
    await store.close()
    await redis.kill()
  }
})
