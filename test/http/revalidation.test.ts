/**
 * Revalidation of an entry that holds the original bytes because sharp failed (Next serves the
 * source until its next revalidation, then runs sharp again): such an entry is never renewed by
 * an upstream 304, or the unoptimized original would be served for ever.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import request from 'supertest'
import { corpusFile, startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { frozenClock } from '../helpers/clock.js'
import { image } from '../helpers/image-url.js'
import type { Sidecar } from '../../sidecar/server/app.js'

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(() => upstream.close())

const get = (s: Sidecar, path: string) => request(s.app).get(path).set('Accept', 'image/webp')
const metrics = async (s: Sidecar) => (await request(s.app).get('/metrics')).text

test('a sharp-failure fallback is revalidated with a full fetch and optimized again, not renewed by a 304', async (t) => {
  const clock = frozenClock()
  t.after(clock.restore)
  // The origin honours If-None-Match on "v1" (answers 304); the first transform of its bytes fails.
  upstream.mutable.set('flaky-sharp', { status: 200, body: corpusFile('bad/truncated.jpg'), headers: { etag: '"v1"', 'content-type': 'image/jpeg' } })
  const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { minimumCacheTTL: 1 } } })
  t.after(() => s.close())
  const path = image('/mutable/flaky-sharp', 256)
  const first = await get(s, path)
  assert.equal(first.headers['content-type'], 'image/jpeg', 'the fallback serves the original bytes')
  upstream.mutable.set('flaky-sharp', { status: 200, body: corpusFile('photo-jpeg/rocket.jpg'), headers: { etag: '"v1"', 'content-type': 'image/jpeg' } })
  clock.advance(1001)
  assert.equal((await get(s, path)).headers['x-nextjs-cache'], 'STALE')
  await s.idle()
  const revalidation = upstream.requests.filter((r) => r.url === '/mutable/flaky-sharp').at(-1)!
  assert.equal(revalidation.headers['if-none-match'], undefined, 'the fallback was revalidated conditionally')
  assert.equal(metric(await metrics(s), 'next_image_sidecar_transforms_total'), 2)
  const after = await get(s, path)
  assert.equal(after.headers['x-nextjs-cache'], 'HIT')
  assert.equal(after.headers['content-type'], 'image/webp')
})

test('an optimized entry is still revalidated conditionally', async (t) => {
  const clock = frozenClock()
  t.after(clock.restore)
  upstream.mutable.set('optimized', { status: 200, body: corpusFile('png/coffee.png'), headers: { etag: '"v1"' } })
  const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { minimumCacheTTL: 1 } } })
  t.after(() => s.close())
  const path = image('/mutable/optimized', 256)
  await get(s, path)
  clock.advance(1001)
  await get(s, path)
  await s.idle()
  assert.equal(upstream.requests.filter((r) => r.url === '/mutable/optimized').at(-1)!.headers['if-none-match'], '"v1"')
})
