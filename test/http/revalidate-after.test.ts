/** --revalidate-after: a cached entry older than it is checked against its source with its validators. */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import request from 'supertest'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { frozenClock } from '../helpers/clock.js'
import { metric } from '../helpers/metrics.js'
import { image } from '../helpers/image-url.js'

let upstream: UpstreamServer
const OLD = corpusFile('photo-jpeg/rocket.jpg')
const NEW = corpusFile('photo-jpeg/garden.jpg')

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

const fetchesOf = (key: string) => upstream.requests.filter((r) => r.url === `/mutable/${key}`)

test('an upstream whose ETag changed: the entry is replaced after the check, the headers stay Next\'s', async (t) => {
  upstream.mutable.set('ra', { status: 200, body: OLD, headers: { 'content-type': 'image/jpeg', etag: '"v1"' } })
  const s = testSidecar({ frontend: upstream.url, revalidateAfter: 60 })
  const clock = frozenClock()
  t.after(() => clock.restore())
  try {
    const path = image('/mutable/ra', 640)
    const first = await request(s.app).get(path).set('Accept', 'image/webp')
    assert.equal(first.headers['x-nextjs-cache'], 'MISS')
    upstream.mutable.set('ra', { status: 200, body: NEW, headers: { 'content-type': 'image/jpeg', etag: '"v2"' } })
    clock.advance(59_000)
    assert.equal((await request(s.app).get(path).set('Accept', 'image/webp')).headers.etag, first.headers.etag)
    await s.idle()
    assert.equal(fetchesOf('ra').length, 1, 'checked before its time')
    clock.advance(2_000)
    const due = await request(s.app).get(path).set('Accept', 'image/webp')
    assert.equal(due.headers['x-nextjs-cache'], 'HIT')
    await s.idle()
    const check = fetchesOf('ra')[1]
    assert.equal(check?.headers['if-none-match'], '"v1"', 'a conditional request with the stored validator')
    const after = await request(s.app).get(path).set('Accept', 'image/webp')
    assert.equal(after.headers['x-nextjs-cache'], 'HIT')
    assert.notEqual(after.headers.etag, first.headers.etag, 'the changed source replaced the entry')
    for (const name of ['cache-control', 'content-type', 'content-disposition', 'content-security-policy', 'vary']) assert.equal(after.headers[name], first.headers[name], name)
  } finally {
    await s.close()
  }
})

test('through the listening server (its hot-tier hit path included), a due entry is still checked', async (t) => {
  upstream.mutable.set('rd', { status: 200, body: OLD, headers: { 'content-type': 'image/jpeg', etag: '"v1"' } })
  const s = testSidecar({ frontend: upstream.url, revalidateAfter: 60 })
  const server = await s.listen(0, '127.0.0.1')
  const clock = frozenClock()
  t.after(() => clock.restore())
  try {
    const url = `${server.url}${image('/mutable/rd', 640)}`
    const get = async () => {
      const res = await fetch(url, { headers: { accept: 'image/webp' } })
      await res.arrayBuffer()
      return { cache: res.headers.get('x-nextjs-cache'), etag: res.headers.get('etag') }
    }
    const first = await get()
    assert.equal((await get()).cache, 'HIT')
    upstream.mutable.set('rd', { status: 200, body: NEW, headers: { 'content-type': 'image/jpeg', etag: '"v2"' } })
    clock.advance(61_000)
    await get()
    await s.idle()
    assert.equal(fetchesOf('rd').length, 2, 'the hot hit was answered without the check')
    assert.notEqual((await get()).etag, first.etag)
  } finally {
    server.close()
    server.closeAllConnections()
    await s.close()
  }
})

test('an upstream that answers 304: the entry is kept as it is, with no transform, and checked again only after the interval', async (t) => {
  upstream.mutable.set('rb', { status: 200, body: OLD, headers: { 'content-type': 'image/jpeg', etag: '"v1"' } })
  const s = testSidecar({ frontend: upstream.url, revalidateAfter: 60 })
  const clock = frozenClock()
  t.after(() => clock.restore())
  try {
    const path = image('/mutable/rb', 640)
    const first = await request(s.app).get(path).set('Accept', 'image/webp')
    upstream.mutable.set('rb', { status: 304, body: Buffer.alloc(0), headers: { etag: '"v1"' } })
    const transforms = metric((await request(s.app).get('/metrics')).text, 'next_image_sidecar_transforms_total')
    clock.advance(61_000)
    await request(s.app).get(path).set('Accept', 'image/webp')
    await s.idle()
    assert.equal(fetchesOf('rb').length, 2)
    assert.equal(fetchesOf('rb')[1]!.headers['if-none-match'], '"v1"')
    const after = await request(s.app).get(path).set('Accept', 'image/webp')
    assert.equal(after.headers.etag, first.headers.etag)
    assert.equal(metric((await request(s.app).get('/metrics')).text, 'next_image_sidecar_transforms_total'), transforms, 'a 304 costs no transform')
    clock.advance(30_000)
    await request(s.app).get(path).set('Accept', 'image/webp')
    await s.idle()
    assert.equal(fetchesOf('rb').length, 2, 'the check restarted the interval')
  } finally {
    await s.close()
  }
})

test('off by default (Next\'s semantics): no check while the entry is fresh', async (t) => {
  upstream.mutable.set('rc', { status: 200, body: OLD, headers: { 'content-type': 'image/jpeg', etag: '"v1"' } })
  const s = testSidecar({ frontend: upstream.url })
  const clock = frozenClock()
  t.after(() => clock.restore())
  try {
    const path = image('/mutable/rc', 640)
    await request(s.app).get(path).set('Accept', 'image/webp')
    clock.advance(3_600_000)
    assert.equal((await request(s.app).get(path).set('Accept', 'image/webp')).headers['x-nextjs-cache'], 'HIT')
    await s.idle()
    assert.equal(fetchesOf('rc').length, 1)
  } finally {
    await s.close()
  }
})

describe('found by review: a failing origin was fetched again by every request for a due entry', () => {
  test('a check that fails is recorded: 30 requests for a due entry of an origin answering 500 cost one check, counted as failed, and the next interval one more', async (t) => {
    upstream.mutable.set('rf', { status: 200, body: OLD, headers: { 'content-type': 'image/jpeg', etag: '"v1"' } })
    const s = testSidecar({ frontend: upstream.url, revalidateAfter: 60 })
    const clock = frozenClock()
    t.after(() => clock.restore())
    try {
      const path = image('/mutable/rf', 640)
      const first = await request(s.app).get(path).set('Accept', 'image/webp')
      upstream.mutable.set('rf', { status: 500, body: Buffer.from('down') })
      clock.advance(61_000)
      for (let i = 0; i < 30; i++) {
        const res = await request(s.app).get(path).set('Accept', 'image/webp')
        assert.deepEqual([res.status, res.headers.etag], [200, first.headers.etag], 'the entry is served as it was')
        await s.idle()
      }
      assert.equal(fetchesOf('rf').length, 2, 'one check in the interval, whatever the traffic')
      const text = (await request(s.app).get('/metrics')).text
      assert.equal(metric(text, 'next_image_sidecar_source_checks_total', { outcome: 'failed' }), 1)
      clock.advance(61_000)
      for (let i = 0; i < 5; i++) {
        await request(s.app).get(path).set('Accept', 'image/webp')
        await s.idle()
      }
      assert.equal(fetchesOf('rf').length, 3, 'checked again after the next interval')
    } finally {
      await s.close()
    }
  })

  test('one check in flight per source: 20 concurrent requests for 4 due variants of one source, its origin slow, start one check', async (t) => {
    const src = '/slow/1500/photo-jpeg/rocket.jpg'
    const fetches = () => upstream.requests.filter((r) => r.url === src).length
    const s = testSidecar({ frontend: upstream.url, revalidateAfter: 60, nextConfig: { images: { localPatterns: [{ pathname: '**' }] } } })
    const clock = frozenClock()
    t.after(() => clock.restore())
    try {
      const widths = [256, 384, 640, 750]
      const before = fetches()
      await Promise.all(widths.map((w) => request(s.app).get(image(src, w)).set('Accept', 'image/webp')))
      assert.equal(fetches() - before, 4)
      clock.advance(61_000)
      const answers = await Promise.all(widths.flatMap((w) => Array.from({ length: 5 }, () => request(s.app).get(image(src, w)).set('Accept', 'image/webp'))))
      assert.deepEqual(new Set(answers.map((a) => a.headers['x-nextjs-cache'])), new Set(['HIT']))
      await s.idle()
      assert.equal(fetches() - before, 5, 'one check of the source in flight at a time')
      const text = (await request(s.app).get('/metrics')).text
      assert.equal(metric(text, 'next_image_sidecar_source_checks_total', { outcome: 'unchanged' }), 1)
    } finally {
      await s.close()
    }
  })
})
