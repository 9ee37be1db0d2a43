import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import request from 'supertest'
import sharp from 'sharp'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import type { Sidecar } from '../../sidecar/server/app.js'
import { image } from '../helpers/image-url.js'
import { frozenClock } from '../helpers/clock.js'
import { metric } from '../helpers/metrics.js'

let upstream: UpstreamServer
let sidecar: Sidecar
// supertest's parser hook: collect the raw bytes (its Response type hides the stream API).
const binary = (res: any, cb: (err: Error | null, body: Buffer) => void) => {
  const chunks: Buffer[] = []
  res.on('data', (c: Buffer) => chunks.push(c))
  res.on('end', () => cb(null, Buffer.concat(chunks)))
}
const transforms = async (s: Sidecar) => metric(await (await request(s.app).get('/metrics')).text, 'next_image_sidecar_transforms_total')
const get = (app: Sidecar['app'], path: string, accept = 'image/avif,image/webp,*/*') =>
  request(app).get(path).set('Accept', accept).buffer(true).parse(binary)

before(async () => {
  upstream = await startUpstream()
  sidecar = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port) })
})
after(async () => {
  await sidecar.close()
  await upstream.close()
})

describe('a successful response', () => {
  test('carries Next’s headers, in Next’s values', async () => {
    const res = await get(sidecar.app, image('/corpus/photo-jpeg/rocket.jpg'))
    assert.equal(res.status, 200)
    assert.equal(res.headers.vary, 'Accept')
    assert.equal(res.headers['cache-control'], 'public, max-age=14400, must-revalidate')
    assert.match(res.headers.etag!, /^[A-Za-z0-9_-]{43}$/)
    assert.equal(res.headers['content-type'], 'image/webp')
    assert.equal(res.headers['content-disposition'], 'attachment; filename="rocket.webp"')
    assert.equal(res.headers['content-security-policy'], "script-src 'none'; frame-src 'none'; sandbox;")
    assert.equal(res.headers['x-nextjs-cache'], 'MISS')
    assert.equal(Number(res.headers['content-length']), res.body.length)
    const meta = await sharp(res.body).metadata()
    assert.deepEqual([meta.format, meta.width], ['webp', 384])
  })
  test('helmet adds no header that changes an image’s meaning', async () => {
    const res = await get(sidecar.app, image('/corpus/photo-jpeg/rocket.jpg'))
    assert.equal(res.headers['cross-origin-resource-policy'], 'cross-origin')
    assert.equal(res.headers['strict-transport-security'], undefined)
    assert.equal(res.headers['x-powered-by'], undefined)
  })
  test('the second request is a HIT with the same ETag and bytes', async () => {
    const first = await get(sidecar.app, image('/corpus/png/coffee.png', 256))
    const second = await get(sidecar.app, image('/corpus/png/coffee.png', 256))
    assert.equal(second.headers['x-nextjs-cache'], 'HIT')
    assert.equal(second.headers.etag, first.headers.etag)
    assert.ok(second.body.equals(first.body))
  })
  test('If-None-Match with the ETag → 304 with Vary, Cache-Control and ETag only', async () => {
    const first = await get(sidecar.app, image('/corpus/png/coffee.png', 128))
    const res = await request(sidecar.app).get(image('/corpus/png/coffee.png', 128)).set('Accept', 'image/avif,image/webp,*/*').set('If-None-Match', first.headers.etag!)
    assert.equal(res.status, 304)
    assert.equal(res.headers.etag, first.headers.etag)
    assert.equal(res.headers.vary, 'Accept')
    assert.equal(res.headers['cache-control'], 'public, max-age=14400, must-revalidate')
    assert.equal(res.headers['content-type'], undefined)
    assert.equal(res.headers['x-nextjs-cache'], undefined)
  })
  test('a quoted ETag does not match (as in Next)', async () => {
    const first = await get(sidecar.app, image('/corpus/png/coffee.png', 128))
    const res = await get(sidecar.app, image('/corpus/png/coffee.png', 128)).set('If-None-Match', `"${first.headers.etag}"`)
    assert.equal(res.status, 200)
  })
  test('HEAD sends the headers without a body', async () => {
    const res = await request(sidecar.app).head(image('/corpus/photo-jpeg/rocket.jpg', 128)).set('Accept', 'image/webp')
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'image/webp')
    assert.ok(Number(res.headers['content-length']) > 0)
    assert.equal(res.text, undefined)
  })
  test('without an accepted format the source format is kept', async () => {
    const res = await get(sidecar.app, image('/corpus/photo-jpeg/rocket.jpg', 128), '*/*')
    assert.equal(res.headers['content-type'], 'image/jpeg')
    assert.equal(res.headers['content-disposition'], 'attachment; filename="rocket.jpeg"')
  })
  test('WebP without an accepted format becomes JPEG', async () => {
    const res = await get(sidecar.app, image('/corpus/webp/debian-logo-alpha.webp', 128), 'image/png')
    assert.equal(res.headers['content-type'], 'image/jpeg')
  })
  test('Next’s static media gets an immutable Cache-Control', async () => {
    const res = await get(sidecar.app, image('/_next/static/media/chelsea.0123abcd.png', 128))
    assert.equal(res.status, 200)
    assert.equal(res.headers['cache-control'], 'public, max-age=315360000, immutable')
  })
  test('the upstream Content-Type is ignored: bytes decide', async () => {
    // The test upstream labels every corpus file application/octet-stream.
    const res = await get(sidecar.app, image('/corpus/bad/png-named.jpg', 128))
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'image/webp')
  })
})

describe('pass-through types', () => {
  for (const [file, type] of [
    ['gif-animated/flowers-3-frames.gif', 'image/gif'],
    ['webp-animated/flowers-3-frames.webp', 'image/webp'],
    ['ico-bmp/debian-emblem.ico', 'image/x-icon'],
    ['ico-bmp/coffee.bmp', 'image/bmp'],
  ]) {
    test(`${file} is served unmodified as ${type}`, async () => {
      const res = await get(sidecar.app, image(`/corpus/${file}`, 128))
      assert.equal(res.status, 200)
      assert.equal(res.headers['content-type'], type)
      assert.ok(res.body.equals(corpusFile(file!)))
    })
  }
  test('SVG is served as-is with the CSP when dangerouslyAllowSVG', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { dangerouslyAllowSVG: true, contentDispositionType: 'inline' } } })
    const res = await get(s.app, image('/corpus/svg/debian-logo.svg', 128))
    assert.equal(res.headers['content-type'], 'image/svg+xml')
    assert.equal(res.headers['content-security-policy'], "script-src 'none'; frame-src 'none'; sandbox;")
    assert.equal(res.headers['content-disposition'], 'inline; filename="debian-logo.svg"')
    assert.ok(res.body.equals(corpusFile('svg/debian-logo.svg')))
    await s.close()
  })
  test('an image sharp cannot decode is served as its original bytes', async () => {
    const res = await get(sidecar.app, image('/corpus/bad/truncated.jpg', 128))
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'image/jpeg')
    assert.ok(res.body.equals(corpusFile('bad/truncated.jpg')))
  })
})

describe('upstream requests', () => {
  test('absolute URLs are fetched with exactly Next’s request headers', async () => {
    await get(sidecar.app, image(`${upstream.url}/corpus/png/chelsea.png`, 128)).set('Cookie', 'session=secret')
    const seen = upstream.requests.findLast((r) => r.url === '/corpus/png/chelsea.png')!
    assert.equal(seen.headers.accept, '*/*')
    assert.equal(seen.headers['accept-language'], '*')
    assert.equal(seen.headers['sec-fetch-mode'], 'cors')
    assert.equal(seen.headers['user-agent'], 'node')
    assert.equal(seen.headers['accept-encoding'], 'gzip, deflate')
    assert.equal(seen.headers.cookie, undefined)
  })
  test('relative URLs are fetched from the frontend without client headers', async () => {
    await get(sidecar.app, image('/corpus/png/palette-color.png', 64)).set('Cookie', 'session=secret').set('Authorization', 'Bearer x')
    const seen = upstream.requests.findLast((r) => r.url === '/corpus/png/palette-color.png')!
    assert.equal(seen.headers.cookie, undefined)
    assert.equal(seen.headers.authorization, undefined)
  })
  for (const coding of ['gzip', 'x-gzip', 'br', 'deflate', 'deflate-raw']) {
    test(`Content-Encoding ${coding} is decoded`, async () => {
      const res = await get(sidecar.app, image(`${upstream.url}/encoded/${coding}/png/chelsea.png`, 64))
      assert.equal(res.status, 200)
      assert.equal((await sharp(res.body).metadata()).width, 64)
    })
  }
  test('redirects are followed up to maximumRedirects', async () => {
    const res = await get(sidecar.app, image(`${upstream.url}/redirect/3?to=${encodeURIComponent('/corpus/png/chelsea.png')}`, 64))
    assert.equal(res.status, 200)
  })
  test('upstream max-age longer than minimumCacheTTL is kept', async () => {
    const res = await get(sidecar.app, image(`${upstream.url}/headers/png/chelsea.png?cc=${encodeURIComponent('public, max-age=99999')}`, 64))
    assert.equal(res.headers['cache-control'], 'public, max-age=99999, must-revalidate')
  })
  test('a pass-through image’s ETag is the base64url of the upstream ETag', async () => {
    const res = await get(sidecar.app, image(`${upstream.url}/headers/gif-animated/no-time-for-that.gif?etag=${encodeURIComponent('W/"aa-1a20deddb55"')}`, 64))
    assert.equal(res.headers.etag, 'Vy8iYWEtMWEyMGRlZGRiNTUi')
  })
})

describe('cache semantics', () => {
  test('concurrent identical requests fetch and encode once, and all answer MISS', async () => {
    const s = testSidecar({ frontend: upstream.url })
    const url = '/corpus/photo-jpeg/storm.jpg'
    const before = upstream.requests.filter((r) => r.url === url).length
    const responses = await Promise.all(Array.from({ length: 8 }, () => get(s.app, image(url, 640))))
    assert.deepEqual(new Set(responses.map((r) => r.headers['x-nextjs-cache'])), new Set(['MISS']))
    assert.equal(new Set(responses.map((r) => r.headers.etag)).size, 1)
    assert.equal(upstream.requests.filter((r) => r.url === url).length, before + 1)
    assert.equal(await transforms(s), 1)
    await s.close()
  })
  test('MISS → HIT → STALE (after expiry) → HIT (after the background refresh)', async (t) => {
    const clock = frozenClock()
    t.after(clock.restore)
    const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { minimumCacheTTL: 1 } } })
    const path = image('/corpus/png/coins-gray.png', 64)
    assert.equal((await get(s.app, path)).headers['x-nextjs-cache'], 'MISS')
    assert.equal((await get(s.app, path)).headers['x-nextjs-cache'], 'HIT')
    clock.advance(1001)
    assert.equal((await get(s.app, path)).headers['x-nextjs-cache'], 'STALE')
    await s.idle()
    assert.equal((await get(s.app, path)).headers['x-nextjs-cache'], 'HIT')
    await s.close()
  })
  test('a replaced upstream file is picked up at the next revalidation', async (t) => {
    const clock = frozenClock()
    t.after(clock.restore)
    const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { minimumCacheTTL: 1 } } })
    upstream.mutable.set('replaced', { status: 200, body: corpusFile('png/coffee.png') })
    const path = image('/mutable/replaced', 64)
    const before = await get(s.app, path)
    upstream.mutable.set('replaced', { status: 200, body: corpusFile('png/chelsea.png') })
    clock.advance(1001)
    const stale = await get(s.app, path)
    assert.equal(stale.headers['x-nextjs-cache'], 'STALE')
    assert.ok(stale.body.equals(before.body))
    await s.idle()
    const after = await get(s.app, path)
    assert.equal(after.headers['x-nextjs-cache'], 'HIT')
    assert.notEqual(after.headers.etag, before.headers.etag)
    await s.close()
  })
  test('a failed refresh keeps the old bytes for Next’s short 3 s, then revalidates again', async (t) => {
    const clock = frozenClock()
    t.after(clock.restore)
    const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { minimumCacheTTL: 1 } } })
    upstream.mutable.set('vanishing', { status: 200, body: corpusFile('png/coffee.png') })
    const path = image('/mutable/vanishing', 64)
    const fetches = () => upstream.requests.filter((r) => r.url === '/mutable/vanishing').length
    const first = await get(s.app, path)
    upstream.mutable.delete('vanishing')
    clock.advance(1001)
    const stale = await get(s.app, path)
    assert.equal(stale.status, 200)
    assert.equal(stale.headers['x-nextjs-cache'], 'STALE')
    await s.idle()
    assert.equal(fetches(), 2)
    const kept = await get(s.app, path)
    assert.equal(kept.status, 200)
    assert.equal(kept.headers['x-nextjs-cache'], 'HIT')
    assert.equal(kept.headers['cache-control'], 'public, max-age=3, must-revalidate')
    assert.ok(kept.body.equals(first.body))
    // The retry: after those 3 s the next request is STALE again and refreshes once more.
    clock.advance(3001)
    const retried = await get(s.app, path)
    assert.equal(retried.headers['x-nextjs-cache'], 'STALE')
    assert.ok(retried.body.equals(first.body))
    await s.idle()
    assert.equal(fetches(), 3)
    await s.close()
  })
  test('a refreshed entry is a HIT again on a shared SQLite store', async (t) => {
    const clock = frozenClock()
    t.after(clock.restore)
    const dir = mkdtempSync(join(tmpdir(), 'nis-sqlite-'))
    const cache = `sqlite://${join(dir, 'cache.sqlite')}`
    const s = testSidecar({ frontend: upstream.url, cache, nextConfig: { images: { minimumCacheTTL: 1 } } })
    const path = image('/corpus/png/silk.png', 64)
    assert.equal((await get(s.app, path)).headers['x-nextjs-cache'], 'MISS')
    clock.advance(1001)
    assert.equal((await get(s.app, path)).headers['x-nextjs-cache'], 'STALE')
    await s.close()
    const reopened = testSidecar({ frontend: upstream.url, cache, nextConfig: { images: { minimumCacheTTL: 1 } } })
    const again = await get(reopened.app, path)
    assert.equal(again.headers['x-nextjs-cache'], 'HIT')
    assert.equal((await sharp(again.body).metadata()).width, 64)
    await reopened.close()
  })
  test('a refresh failing with an upstream 500 keeps serving the old bytes', async (t) => {
    const clock = frozenClock()
    t.after(clock.restore)
    const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port, { minimumCacheTTL: 1 }) })
    upstream.mutable.set('failing', { status: 200, body: corpusFile('png/coins-gray.png') })
    const path = image(`${upstream.url}/mutable/failing`, 64)
    const first = await get(s.app, path)
    assert.equal(first.status, 200)
    upstream.mutable.set('failing', { status: 500, body: Buffer.from('upstream broke') })
    clock.advance(1001)
    const stale = await get(s.app, path)
    assert.equal(stale.headers['x-nextjs-cache'], 'STALE')
    assert.ok(stale.body.equals(first.body))
    await s.idle()
    const served = upstream.requests.filter((r) => r.url === '/mutable/failing').length
    assert.equal(served, 2, 'the refresh reached the failing upstream')
    const kept = await get(s.app, path)
    assert.equal(kept.status, 200)
    assert.ok(kept.body.equals(first.body))
    assert.equal(kept.headers.etag, first.headers.etag)
    await s.close()
  })
})

describe('routes', () => {
  test('basePath prefixes the image route', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: { basePath: '/shop' } })
    assert.equal((await get(s.app, `/shop${image('/corpus/png/palette-color.png', 64)}`)).status, 200)
    assert.equal((await get(s.app, image('/corpus/png/palette-color.png', 64))).status, 404)
    await s.close()
  })
  test('a trailing slash is redirected with 308, keeping the query', async () => {
    const res = await request(sidecar.app).get('/_next/image/?url=%2Fa.png&w=384&q=75')
    assert.equal(res.status, 308)
    assert.equal(res.headers.location, '/_next/image?url=%2Fa.png&w=384&q=75')
  })
  test('with trailingSlash, /_next/image/ is served directly, as next start does', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: { trailingSlash: true } })
    const res = await get(s.app, `/_next/image/?url=${encodeURIComponent('/corpus/png/palette-color.png')}&w=64&q=75`)
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'image/webp')
    await s.close()
  })
  test('the route is case-sensitive, as Next\'s: /_NEXT/IMAGE is a 404', async () => {
    assert.equal((await get(sidecar.app, image('/corpus/png/palette-color.png', 64).replace('/_next/image', '/_NEXT/IMAGE'))).status, 404)
    assert.equal((await get(sidecar.app, image('/corpus/png/palette-color.png', 64).replace('/_next/image', '/_next/Image'))).status, 404)
  })
  test('/healthz answers 200', async () => assert.equal((await request(sidecar.app).get('/healthz')).status, 200))
  test('/readyz answers 200 while the store answers', async () => assert.equal((await request(sidecar.app).get('/readyz')).status, 200))
  test('an unknown path is a 404', async () => assert.equal((await request(sidecar.app).get('/nope')).status, 404))
})
