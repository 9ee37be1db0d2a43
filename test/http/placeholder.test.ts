/**
 * The placeholder endpoint (`/_sidecar/placeholder?url=`, beyond Next): for a source the optimizer
 * would accept, what a static import of it evaluates to (size and Next's blur placeholder), with the
 * optimizer's refusals, cache, single flight, purge and signing. Next's own build-time code
 * (`getBlurImage`, `getImageSize` of next 16.4.6 and 15.5.29) is the oracle.
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import request from 'supertest'
import sharp from 'sharp'
import { corpusFile, startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { NEXT_PACKAGES } from '../helpers/next-app.js'
import { signImageParams, signPlaceholder } from '../../sidecar/server/signature.js'
import type { Sidecar } from '../../sidecar/server/app.js'
import type { NextMajor } from '../../sidecar/next/next-version.js'

const require = createRequire(import.meta.url)
type Tracing = () => { traceFn: <T>(fn: () => T) => T; traceAsyncFn: <T>(fn: () => Promise<T>) => Promise<T> }
type BlurOracle = (content: Buffer, extension: string, size: { width: number; height: number }, opts: { isDev: boolean; tracing: Tracing }) => Promise<{ dataURL?: string; width: number; height: number }>
/** Next's static-import steps of each line: the size from the header, then the blur. */
const NEXT: Record<NextMajor, { blur: BlurOracle; size: (b: Buffer) => Promise<{ width: number; height: number }> }> = {
  16: {
    blur: require(join(NEXT_PACKAGES[16], 'dist/build/webpack/loaders/next-image-loader/blur.js')).getBlurImage,
    size: require(join(NEXT_PACKAGES[16], 'dist/server/image-optimizer/get-image-size.js')).getImageSize,
  },
  15: {
    blur: require(join(NEXT_PACKAGES[15], 'dist/build/webpack/loaders/next-image-loader/blur.js')).getBlurImage,
    size: require(join(NEXT_PACKAGES[15], 'dist/server/image-optimizer.js')).getImageSize,
  },
}

/** What `import img from './<file>'` gives in a production build of that line (src aside). */
async function staticImport(major: NextMajor, file: string, extension: string) {
  const content = corpusFile(file)
  const size = await NEXT[major].size(content)
  // Spans as the build's (Span.traceFn runs the function): getBlurImage's default tracing returns wrappers.
  const tracing: Tracing = () => ({ traceFn: (fn) => fn(), traceAsyncFn: (fn) => fn() })
  const blur = await NEXT[major].blur(content, extension, size, { isDev: false, tracing })
  return JSON.parse(JSON.stringify({ height: size.height, width: size.width, blurDataURL: blur.dataURL, blurWidth: blur.width, blurHeight: blur.height }))
}

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(() => upstream.close())

const placeholderPath = (url: string) => `/_sidecar/placeholder?url=${encodeURIComponent(url)}`
const get = (s: Sidecar, url: string) => request(s.app).get(placeholderPath(url))
const metrics = async (s: Sidecar) => (await request(s.app).get('/metrics')).text

/** Sources Next blurs, by line (15.5 blurs AVIF only with a safe libheif, which sharp 0.35 has). */
const BLURRED: Array<[file: string, extension: string]> = [
  ['photo-jpeg/rocket.jpg', 'jpeg'],
  ['photo-jpeg/garden-progressive.jpg', 'jpeg'],
  ['photo-jpeg/aqua-cmyk.jpg', 'jpeg'],
  ['photo-jpeg/camera-gray.jpg', 'jpeg'],
  ['png/chelsea.png', 'png'],
  ['png/chelsea-16bit.png', 'png'],
  ['png/palette-color.png', 'png'],
  ['png-alpha/debian-logo-256.png', 'png'],
  ['tiny/logo-text-64.png', 'png'],
  ['tiny/one-pixel.png', 'png'],
  ['webp/coffee-lossless.webp', 'webp'],
  ['webp/debian-logo-alpha.webp', 'webp'],
  ['avif/chelsea.avif', 'avif'],
]
/** Sources Next gives a size but no blur. */
const UNBLURRED: Array<[file: string, extension: string]> = [
  ['gif-static/coins.gif', 'gif'],
  ['gif-animated/flowers-3-frames.gif', 'gif'],
  ['webp-animated/flowers-3-frames.webp', 'webp'],
  ['ico-bmp/debian-emblem.ico', 'ico'],
  ['ico-bmp/coffee.bmp', 'bmp'],
]

for (const major of [16, 15] as const) {
  describe(`the placeholder is Next ${major}'s static import of the source`, () => {
    let s: Sidecar
    before(() => {
      s = testSidecar({ frontend: upstream.url, nextVersion: major })
    })
    after(() => s.close())

    for (const [file, extension] of [...BLURRED, ...UNBLURRED]) {
      test(`${file}: the same size, blur size and blur bytes`, async () => {
        const res = await get(s, `/corpus/${file}`)
        assert.equal(res.status, 200, res.text)
        const { src, ...rest } = res.body
        assert.equal(src, `/corpus/${file}`)
        assert.deepEqual(rest, await staticImport(major, file, extension))
      })
    }
  })
}

test('every blurred source in the table really has a blur, and every unblurred one has none', async (t) => {
  const s = testSidecar({ frontend: upstream.url })
  t.after(() => s.close())
  for (const [file] of BLURRED) assert.match((await get(s, `/corpus/${file}`)).body.blurDataURL ?? '', /^data:image\/(jpeg|png|webp|avif);base64,/, file)
  for (const [file] of UNBLURRED) assert.equal((await get(s, `/corpus/${file}`)).body.blurDataURL, undefined, file)
})

test('an EXIF-rotated source answers the size it is displayed at, and a blur of that shape', async (t) => {
  const s = testSidecar({ frontend: upstream.url })
  t.after(() => s.close())
  // Stored 2560×1600 with orientation 6: displayed 1600×2560.
  const res = await get(s, '/corpus/photo-jpeg/ladybird-exif-rotate-6.jpg')
  assert.equal(res.status, 200, res.text)
  assert.deepEqual([res.body.width, res.body.height, res.body.blurWidth, res.body.blurHeight], [1600, 2560, 5, 8])
  const blur = await sharp(Buffer.from(res.body.blurDataURL.split(',')[1], 'base64')).metadata()
  assert.deepEqual([blur.width, blur.height, blur.format], [5, 8, 'jpeg'])
  const upright = await get(s, '/corpus/photo-jpeg/ladybird.jpg')
  assert.deepEqual([upright.body.width, upright.body.height], [2560, 1600])
})

test('an absolute source answers as a relative one does, under remotePatterns', async (t) => {
  const s = testSidecar({ frontend: 'http://127.0.0.1:9', nextConfig: localRemoteConfig(upstream.port) })
  t.after(() => s.close())
  const res = await get(s, `${upstream.url}/corpus/png/coffee.png`)
  assert.equal(res.status, 200, res.text)
  assert.deepEqual([res.body.src, res.body.width, res.body.height, res.body.blurWidth, res.body.blurHeight], [`${upstream.url}/corpus/png/coffee.png`, 600, 400, 8, 5])
})

test('an SVG is refused as the optimizer refuses it', async (t) => {
  const s = testSidecar({ frontend: upstream.url })
  t.after(() => s.close())
  const res = await get(s, '/corpus/svg/oceans.svg')
  assert.deepEqual([res.status, res.text], [400, '"url" parameter is valid but image type is not allowed'])
})

test('with dangerouslyAllowSVG an SVG answers its size without a blur, as its static import', async (t) => {
  const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { dangerouslyAllowSVG: true } } })
  t.after(() => s.close())
  const res = await get(s, '/corpus/svg/oceans.svg')
  assert.equal(res.status, 200, res.text)
  assert.deepEqual(res.body, { ...(await staticImport(16, 'svg/oceans.svg', 'svg')), src: '/corpus/svg/oceans.svg' })
})

test("beyond Next, an SVG whose root element image-size's 1000-byte window misses (Next fails the build) answers the size of its root element", async (t) => {
  const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { dangerouslyAllowSVG: true } } })
  t.after(() => s.close())
  await assert.rejects(NEXT[16].size(corpusFile('svg/debian-logo.svg')), /unsupported file type/)
  const res = await get(s, '/corpus/svg/debian-logo.svg')
  assert.equal(res.status, 200, res.text)
  assert.deepEqual([res.body.width, res.body.height, res.body.blurWidth, res.body.blurDataURL], [128, 128, 0, undefined])
})

describe('bad input gets exactly what the optimizer answers for the same url', () => {
  let s: Sidecar
  before(() => {
    s = testSidecar({ frontend: upstream.url, nextConfig: { images: { maximumResponseBody: 100_000, remotePatterns: [{ hostname: 'images.example.com' }] } } })
  })
  after(() => s.close())
  const cases: Array<[name: string, query: string]> = [
    ['no url', ''],
    ['an empty url', 'url='],
    ['two urls', 'url=/corpus/png/chelsea.png&url=/corpus/png/coffee.png'],
    ['a protocol-relative url', `url=${encodeURIComponent('//evil.example/a.png')}`],
    ['a data: URL', `url=${encodeURIComponent('data:image/png;base64,iVBORw0KGgo=')}`],
    ['a disallowed host', `url=${encodeURIComponent('http://127.0.0.1:9/a.png')}`],
    ['a recursive url', `url=${encodeURIComponent('/_next/image?url=/a.png&w=64&q=75')}`],
    ['a too long url', `url=/${'a'.repeat(3100)}`],
    ['a malformed escape', 'url=/%E0%A4%A'],
    ['not an image', `url=${encodeURIComponent('/corpus/bad/text.txt')}`],
    ['an empty body', `url=${encodeURIComponent('/empty')}`],
    ['a source over maximumResponseBody', `url=${encodeURIComponent('/corpus/photo-jpeg/storm.jpg')}`],
    ['an upstream 404', `url=${encodeURIComponent('/status/404')}`],
    ['an upstream 500', `url=${encodeURIComponent('/status/500')}`],
    ['endless redirects', `url=${encodeURIComponent('/loop')}`],
  ]
  for (const [name, query] of cases) {
    test(name, async () => {
      const optimizer = await request(s.app).get(`/_next/image?${query}${query ? '&' : ''}w=64&q=75`)
      assert.ok(optimizer.status >= 400, `the optimizer refuses ${name} (${optimizer.status})`)
      const placeholder = await request(s.app).get(`/_sidecar/placeholder?${query}`)
      assert.deepEqual([placeholder.status, placeholder.text], [optimizer.status, optimizer.text])
    })
  }
})

test('the second request is a HIT with the same body and ETag, and the source is fetched once', async (t) => {
  const s = testSidecar({ frontend: upstream.url })
  t.after(() => s.close())
  const before = upstream.requests.filter((r) => r.url === '/corpus/png/silk.png').length
  const first = await get(s, '/corpus/png/silk.png')
  const second = await get(s, '/corpus/png/silk.png')
  assert.deepEqual([first.headers['x-sidecar-cache'], second.headers['x-sidecar-cache']], ['MISS', 'HIT'])
  assert.equal(second.text, first.text)
  assert.equal(second.headers.etag, first.headers.etag)
  assert.equal(upstream.requests.filter((r) => r.url === '/corpus/png/silk.png').length - before, 1)
  assert.match(first.headers['content-type'] ?? '', /^application\/json/)
  assert.equal(first.headers['cache-control'], 'public, max-age=14400, must-revalidate')
})

test('the freshness follows the upstream max-age as the optimizer\'s does', async (t) => {
  const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { minimumCacheTTL: 60, localPatterns: [{ pathname: '**' }] } } })
  t.after(() => s.close())
  const res = await get(s, '/headers/png/chelsea.png?cc=public,max-age=86400')
  assert.equal(res.headers['cache-control'], 'public, max-age=86400, must-revalidate')
})

test('If-None-Match with the ETag gets a 304, HEAD gets the headers without a body', async (t) => {
  const s = testSidecar({ frontend: upstream.url })
  t.after(() => s.close())
  const first = await get(s, '/corpus/png/chelsea.png')
  const revalidated = await request(s.app).get(placeholderPath('/corpus/png/chelsea.png')).set('If-None-Match', first.headers.etag!)
  assert.equal(revalidated.status, 304)
  assert.equal(revalidated.text, '')
  const head = await request(s.app).head(placeholderPath('/corpus/png/chelsea.png'))
  assert.equal(head.status, 200)
  assert.equal(head.headers['content-length'], first.headers['content-length'])
  assert.equal(head.text, undefined)
})

test('identical concurrent requests fetch and decode the source once', async (t) => {
  const s = testSidecar({ frontend: upstream.url })
  t.after(() => s.close())
  const path = '/slow/300/png/coffee.png'
  const answers = await Promise.all(Array.from({ length: 6 }, () => get(s, path)))
  assert.deepEqual(new Set(answers.map((a) => a.status)), new Set([200]))
  assert.equal(new Set(answers.map((a) => a.text)).size, 1)
  assert.equal(upstream.requests.filter((r) => r.url === path).length, 1)
  assert.equal(metric(await metrics(s), 'next_image_sidecar_placeholders_total', { blur: 'yes' }), 1)
})

test('placeholder requests are counted apart from image requests', async (t) => {
  const s = testSidecar({ frontend: upstream.url })
  t.after(() => s.close())
  await get(s, '/corpus/png/coins-gray.png')
  await get(s, '/corpus/png/coins-gray.png')
  const text = await metrics(s)
  assert.equal(metric(text, 'next_image_sidecar_placeholder_requests_total', { result: 'miss' }), 1)
  assert.equal(metric(text, 'next_image_sidecar_placeholder_requests_total', { result: 'hit' }), 1)
  assert.doesNotMatch(text, /^next_image_sidecar_cache_requests_total\{[^}]*\} [1-9]/m, 'no image request was counted')
})

test('a purge of the source removes its placeholder with its images, and lists the placeholder URL', async (t) => {
  const s = testSidecar({ frontend: upstream.url })
  t.after(() => s.close())
  const source = '/corpus/photo-jpeg/green-meadow.jpg'
  await get(s, source)
  await request(s.app).get(`/_next/image?url=${encodeURIComponent(source)}&w=64&q=75`).set('Accept', 'image/webp')
  const purged = await s.purge({ sources: [source] })
  assert.equal(purged.removed, 2)
  assert.ok(purged.urls.includes(placeholderPath(source)), purged.urls.join(' '))
  assert.equal((await get(s, source)).headers['x-sidecar-cache'], 'MISS')
})

test('a placeholder is purged by a prefix too', async (t) => {
  const s = testSidecar({ frontend: upstream.url })
  t.after(() => s.close())
  await get(s, '/corpus/webp/garden-lossy.webp')
  assert.equal((await s.purge({ prefix: '/corpus/webp/' })).removed, 1)
  assert.equal((await get(s, '/corpus/webp/garden-lossy.webp')).headers['x-sidecar-cache'], 'MISS')
})

describe('with signing on', () => {
  let s: Sidecar
  before(() => {
    s = testSidecar({ frontend: upstream.url, signingKey: 'k1' })
  })
  after(() => s.close())
  const url = '/corpus/png/chelsea.png'
  test('a request signed for the placeholder is answered', async () => {
    const res = await request(s.app).get(`${placeholderPath(url)}&s=${signPlaceholder('k1', url)}`)
    assert.equal(res.status, 200, res.text)
  })
  test('an unsigned request is refused before any fetch', async () => {
    const before = upstream.requests.length
    const res = await get(s, url)
    assert.deepEqual([res.status, res.text], [403, '"s" parameter (signature) is invalid'])
    assert.equal(upstream.requests.length, before)
  })
  test("an image's signature does not sign its placeholder", async () => {
    const res = await request(s.app).get(`${placeholderPath(url)}&s=${signImageParams('k1', url, '64', '75')}`)
    assert.equal(res.status, 403)
  })
  test('a signature of another key is refused', async () => {
    const res = await request(s.app).get(`${placeholderPath(url)}&s=${signPlaceholder('k2', url)}`)
    assert.equal(res.status, 403)
  })
})

test('a source sharp cannot decode answers its size without a blur, fresh only for minimumCacheTTL', async (t) => {
  const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { minimumCacheTTL: 30, localPatterns: [{ pathname: '**' }] } } })
  t.after(() => s.close())
  // The header says 2560×1600; the body stops halfway.
  const res = await get(s, '/headers/bad/garden-cut-in-half.jpg?cc=public,max-age=86400')
  assert.equal(res.status, 200, res.text)
  assert.deepEqual([res.body.width, res.body.height], [2560, 1600])
  assert.equal(res.headers['cache-control'], 'public, max-age=30, must-revalidate')
})

describe('found by review', () => {
  test('with --cache-key-ignore-params each caller gets its own src, never another caller\'s presigned URL', async (t) => {
    const s = testSidecar({ frontend: 'http://127.0.0.1:9', nextConfig: localRemoteConfig(upstream.port), cacheKeyIgnoreParams: ['X-Amz-*'], dangerouslyIgnoreCredentialParams: true })
    t.after(() => s.close())
    const alice = `${upstream.url}/corpus/png/chelsea.png?X-Amz-Credential=ALICE&X-Amz-Signature=aaaa`
    const bob = `${upstream.url}/corpus/png/chelsea.png?X-Amz-Credential=BOB&X-Amz-Signature=bbbb`
    const first = await get(s, alice)
    const second = await get(s, bob)
    const bare = await get(s, `${upstream.url}/corpus/png/chelsea.png`)
    assert.deepEqual([first.headers['x-sidecar-cache'], second.headers['x-sidecar-cache'], bare.headers['x-sidecar-cache']], ['MISS', 'HIT', 'HIT'])
    assert.deepEqual([first.body.src, second.body.src, bare.body.src], [alice, bob, `${upstream.url}/corpus/png/chelsea.png`])
    assert.doesNotMatch(second.text + bare.text, /ALICE/)
    assert.equal(second.body.blurDataURL, first.body.blurDataURL)
    assert.notEqual(second.headers.etag, first.headers.etag, 'different bodies, different ETags')
  })

  for (const images of [{ unoptimized: true }, { loader: 'custom', loaderFile: './loader.js' }]) {
    test(`with ${JSON.stringify(images)} the route answers 404 as the optimizer's does, fetching nothing`, async (t) => {
      const s = testSidecar({ frontend: upstream.url, nextConfig: { images } })
      t.after(() => s.close())
      const before = upstream.requests.length
      const res = await get(s, '/corpus/png/chelsea.png')
      const optimizer = await request(s.app).get(`/_next/image?url=${encodeURIComponent('/corpus/png/chelsea.png')}&w=64&q=75`)
      assert.deepEqual([res.status, res.text], [optimizer.status, optimizer.text])
      assert.equal(res.status, 404)
      assert.equal(upstream.requests.length, before)
    })
  }

  test('a WebP, a PNG and an AVIF stored turned (EXIF orientation 6) answer the size they are displayed at, as the optimizer renders them', async (t) => {
    const s = testSidecar({ frontend: upstream.url })
    t.after(() => s.close())
    const source = corpusFile('photo-jpeg/ladybird.jpg')
    const turned = {
      webp: await sharp(source).webp().withMetadata({ orientation: 6 }).toBuffer(),
      png: await sharp(source).resize(640).png().withMetadata({ orientation: 6 }).toBuffer(),
      avif: await sharp(source).resize(640).avif().withMetadata({ orientation: 6 }).toBuffer(),
    }
    for (const [name, body] of Object.entries(turned)) {
      upstream.mutable.set(`turned-${name}`, { status: 200, body })
      const res = await get(s, `/mutable/turned-${name}`)
      assert.equal(res.status, 200, res.text)
      const optimized = await sharp((await request(s.app).get(`/_next/image?url=${encodeURIComponent(`/mutable/turned-${name}`)}&w=256&q=75`).set('Accept', 'image/webp').buffer(true)).body).metadata()
      assert.ok(res.body.height > res.body.width, `${name}: ${res.body.width}×${res.body.height}`)
      assert.ok(optimized.height > optimized.width, `${name}: the optimizer's ${optimized.width}×${optimized.height}`)
      assert.deepEqual([res.body.blurWidth, res.body.blurHeight], [5, 8], name)
    }
  })

  test('an ICO with several entries answers its first entry, as Next\'s static import', async (t) => {
    const s = testSidecar({ frontend: upstream.url })
    t.after(() => s.close())
    const entry = (w: number, h: number, size: number, offset: number) => {
      const b = Buffer.alloc(16)
      b[0] = w
      b[1] = h
      b.writeUInt16LE(1, 4)
      b.writeUInt16LE(32, 6)
      b.writeUInt32LE(size, 8)
      b.writeUInt32LE(offset, 12)
      return b
    }
    const small = await sharp({ create: { width: 16, height: 16, channels: 4, background: '#f00' } }).png().toBuffer()
    const large = await sharp({ create: { width: 48, height: 48, channels: 4, background: '#00f' } }).png().toBuffer()
    const ico = Buffer.concat([Buffer.from([0, 0, 1, 0, 2, 0]), entry(16, 16, small.length, 38), entry(48, 48, large.length, 38 + small.length), small, large])
    upstream.mutable.set('two-entry-ico', { status: 200, body: ico })
    const res = await get(s, '/mutable/two-entry-ico')
    assert.equal(res.status, 200, res.text)
    const next = await NEXT[16].size(ico)
    assert.deepEqual([res.body.width, res.body.height], [next.width, next.height])
  })

  test('the answer for a static-media source is never immutable (a fallback would be kept for ever)', async (t) => {
    const s = testSidecar({ frontend: upstream.url })
    t.after(() => s.close())
    const res = await get(s, '/_next/static/media/logo.png')
    assert.equal(res.status, 200, res.text)
    // The source's own max-age still counts (Next serves static media for a year); a fallback's is minimumCacheTTL.
    assert.match(res.headers['cache-control'] ?? '', /^public, max-age=\d+, must-revalidate$/)
  })
})
