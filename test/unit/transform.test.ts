import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import sharp from 'sharp'
import { transformImage, type TransformConfig } from '../../sidecar/image/transform.js'
import { resolveNextConfig } from '../../sidecar/next/images-config.js'
import { PROFILES } from '../../sidecar/next/next-version.js'
import { join } from 'node:path'
import { NEXT_LINES } from '../helpers/next-app.js'
import { extractEtag } from '../../sidecar/next/etag.js'
import { type Upstream } from '../../sidecar/upstream/http.js'
import { ImageError } from '../../sidecar/errors.js'
import { corpusFile } from '../helpers/upstream-server.js'

const require = createRequire(import.meta.url)
type NextTransform = (upstream: Upstream, params: object) => Promise<{ buffer: Buffer; contentType: string; maxAge: number; etag: string; error?: unknown }>

const resolved = resolveNextConfig({})
const config: TransformConfig = { minimumCacheTTL: 14400, dangerouslyAllowSVG: false, sharp: resolved.sharp }
const nextConfig = {
  images: { minimumCacheTTL: 14400, dangerouslyAllowSVG: false },
  experimental: { imgOptMaxInputPixels: 268_402_689, imgOptTimeoutInSeconds: 7, imgOptMozjpeg: true, imgOptConcurrency: null, imgOptOperationCache: null, imgOptSequentialRead: null },
}
/**
 * Each 16 line's own imageOptimizerTransform: 16.4.6 takes the next.config, 16.5.0 the options its
 * getImageOptimizerTransformOptions derives from it (the same values).
 */
const NEXT_TRANSFORMS: Record<'16.5' | '16.4', NextTransform> = {
  '16.5': (upstream, params) =>
    require(join(NEXT_LINES['16.5'], 'dist/server/image-optimizer/transform.js')).imageOptimizerTransform(upstream, params, {
      ...require(join(NEXT_LINES['16.5'], 'dist/server/image-optimizer.js')).getImageOptimizerTransformOptions(nextConfig),
    }),
  '16.4': (upstream, params) => require(join(NEXT_LINES['16.4'], 'dist/server/image-optimizer/transform.js')).imageOptimizerTransform(upstream, params, nextConfig),
}

function upstreamOf(file: string, cacheControl?: string, etag?: string): Upstream {
  const buffer = corpusFile(file)
  return { buffer, contentType: 'application/octet-stream', cacheControl, etag: extractEtag(etag, buffer), validators: {}, status: 200 }
}

describe('output is byte-identical to Next’s imageOptimizerTransform', () => {
  const cases: Array<[string, number, number, string]> = [
    ['photo-jpeg/rocket.jpg', 384, 75, 'image/webp'],
    ['photo-jpeg/rocket.jpg', 256, 75, ''],
    ['photo-jpeg/rocket.jpg', 128, 50, 'image/avif'],
    ['photo-jpeg/ladybird-exif-rotate-6.jpg', 640, 75, 'image/webp'],
    ['photo-jpeg/aqua-cmyk.jpg', 384, 75, 'image/webp'],
    ['photo-jpeg/camera-gray.jpg', 256, 90, ''],
    ['png/chelsea.png', 256, 75, ''],
    ['png/chelsea-16bit.png', 128, 75, 'image/webp'],
    ['png-alpha/debian-logo-256.png', 128, 75, 'image/avif'],
    ['webp/debian-logo-alpha.webp', 128, 75, ''],
    ['avif/chelsea.avif', 256, 75, ''],
    ['gif-static/coins.gif', 256, 75, ''],
    ['tiff/chessboard-u16.tif', 128, 75, ''],
    ['tiny/one-pixel.png', 640, 75, 'image/webp'],
  ]
  for (const [line, imageOptimizerTransform] of Object.entries(NEXT_TRANSFORMS))
  for (const [file, width, quality, mimeType] of cases) {
    test(`Next ${line}: ${file} w=${width} q=${quality} → ${mimeType || 'source type'}`, async () => {
      const upstream = upstreamOf(file)
      const params = { href: `/${file}`, width, quality, mimeType }
      const ours = await transformImage(upstream, params, config)
      const theirs = await imageOptimizerTransform(upstream, params)
      assert.equal(ours.contentType, theirs.contentType)
      assert.equal(ours.maxAge, theirs.maxAge)
      assert.equal(ours.etag, theirs.etag)
      assert.ok(ours.buffer.equals(theirs.buffer), 'bytes differ')
      // Both really optimised: neither fell back to the original bytes after a sharp error.
      assert.equal(ours.error, undefined, `ours failed: ${String(ours.error)}`)
      assert.equal(theirs.error, undefined, `Next's failed: ${String(theirs.error)}`)
      assert.ok(!ours.buffer.equals(upstream.buffer), 'the original bytes came back')
      const source = await sharp(upstream.buffer).metadata()
      const output = await sharp(ours.buffer).metadata()
      const rotated = (source.orientation ?? 1) >= 5
      assert.equal(output.width, Math.min(width, rotated ? source.height! : source.width!))
    })
  }
})

describe('max-age as each 16 line computes it (16.5 caps an upstream’s at 2^31 s)', () => {
  for (const [line, imageOptimizerTransform] of Object.entries(NEXT_TRANSFORMS)) {
    for (const cc of ['max-age=60', 'max-age=2147483647', 'max-age=2147483648', 's-maxage=9999999999', 'max-age="4294967296"']) {
      test(`Next ${line}: ${cc}`, async () => {
        const upstream = upstreamOf('png/chelsea.png', cc)
        const params = { href: '/c.png', width: 64, quality: 75, mimeType: 'image/webp' }
        const ours = await transformImage(upstream, params, { ...config, maxDeltaSeconds: PROFILES[line as '16.5' | '16.4'].maxDeltaSeconds })
        assert.equal(ours.maxAge, (await imageOptimizerTransform(upstream, params)).maxAge)
      })
    }
  }
})

describe('transform rules', () => {
  test('never enlarges: a 451 px source asked for 1080 stays 451 px wide', async () => {
    const r = await transformImage(upstreamOf('png/chelsea.png'), { href: '/c.png', width: 1080, quality: 75, mimeType: 'image/webp' }, config)
    assert.equal((await sharp(r.buffer).metadata()).width, 451)
  })
  test('EXIF orientation 6 is applied, so a landscape source comes out portrait', async () => {
    const r = await transformImage(upstreamOf('photo-jpeg/ladybird-exif-rotate-6.jpg'), { href: '/l.jpg', width: 640, quality: 75, mimeType: '' }, config)
    const meta = await sharp(r.buffer).metadata()
    assert.equal(meta.width, 640)
    assert.ok(meta.height! > meta.width!)
  })
  test('WebP without a negotiated type is downlevelled to JPEG', async () => {
    const r = await transformImage(upstreamOf('webp/garden-lossy.webp'), { href: '/g.webp', width: 640, quality: 75, mimeType: '' }, config)
    assert.equal(r.contentType, 'image/jpeg')
  })
  test('PNG output is palette-quantised', async () => {
    const r = await transformImage(upstreamOf('png/chelsea.png'), { href: '/c.png', width: 256, quality: 75, mimeType: '' }, config)
    assert.equal((await sharp(r.buffer).metadata()).isPalette, true)
  })
  test('animated GIF is passed through with the upstream etag', async () => {
    const up = upstreamOf('gif-animated/flowers-3-frames.gif', undefined, 'W/"abc"')
    const r = await transformImage(up, { href: '/a.gif', width: 256, quality: 75, mimeType: 'image/webp' }, config)
    assert.ok(r.buffer.equals(up.buffer))
    assert.equal(r.contentType, 'image/gif')
    assert.equal(r.etag, Buffer.from('W/"abc"').toString('base64url'))
  })
  test('animated WebP is passed through', async () => {
    const up = upstreamOf('webp-animated/flowers-3-frames.webp')
    const r = await transformImage(up, { href: '/a.webp', width: 256, quality: 75, mimeType: '' }, config)
    assert.equal(r.contentType, 'image/webp')
    assert.ok(r.buffer.equals(up.buffer))
  })
  for (const [file, type] of [['ico-bmp/debian-emblem.ico', 'image/x-icon'], ['ico-bmp/coffee.bmp', 'image/bmp']]) {
    test(`${type} is a bypass type, served unmodified`, async () => {
      const up = upstreamOf(file!)
      const r = await transformImage(up, { href: `/${file}`, width: 64, quality: 75, mimeType: 'image/webp' }, config)
      assert.equal(r.contentType, type)
      assert.ok(r.buffer.equals(up.buffer))
    })
  }
  test('SVG is refused unless dangerouslyAllowSVG', async () => {
    await assert.rejects(
      transformImage(upstreamOf('svg/debian-logo.svg'), { href: '/l.svg', width: 64, quality: 75, mimeType: '' }, config),
      (err: unknown) => err instanceof ImageError && err.statusCode === 400 && err.message === '"url" parameter is valid but image type is not allowed',
    )
  })
  test('SVG is served as-is when dangerouslyAllowSVG', async () => {
    const up = upstreamOf('svg/debian-logo.svg')
    const r = await transformImage(up, { href: '/l.svg', width: 64, quality: 75, mimeType: 'image/webp' }, { ...config, dangerouslyAllowSVG: true })
    assert.equal(r.contentType, 'image/svg+xml')
    assert.ok(r.buffer.equals(up.buffer))
  })
  for (const file of ['bad/text.txt', 'bad/html-named.png', 'bad/random-bytes.jpg']) {
    test(`${file} is not a valid image`, async () => {
      await assert.rejects(
        transformImage(upstreamOf(file), { href: '/x', width: 64, quality: 75, mimeType: '' }, config),
        (err: unknown) => err instanceof ImageError && err.statusCode === 400 && err.message === "The requested resource isn't a valid image.",
      )
    })
  }
  for (const file of ['bad/truncated.jpg', 'bad/jpeg-magic-then-garbage.jpg', 'bad/bomb-20000x20000.png']) {
    test(`${file}: sharp fails, the original bytes are served with minimumCacheTTL`, async () => {
      const up = upstreamOf(file, 'max-age=999999')
      const r = await transformImage(up, { href: '/x', width: 64, quality: 75, mimeType: 'image/webp' }, config)
      assert.ok(r.error)
      assert.ok(r.buffer.equals(up.buffer))
      assert.equal(r.maxAge, 14400)
      assert.equal(r.etag, up.etag)
    })
  }
  test('upstream s-maxage beats minimumCacheTTL when longer', async () => {
    const r = await transformImage(upstreamOf('photo-jpeg/rocket.jpg', 's-maxage=100000, max-age=5'), { href: '/r.jpg', width: 64, quality: 75, mimeType: '' }, config)
    assert.equal(r.maxAge, 100000)
  })
  test('an unchanged previous output is reused without encoding', async () => {
    const previous = { buffer: Buffer.from('previous bytes'), maxAge: 77, etag: 'old-etag', upstreamEtag: 'up' }
    const r = await transformImage(upstreamOf('photo-jpeg/rocket.jpg'), { href: '/r.jpg', width: 64, quality: 75, mimeType: 'image/webp' }, config, previous)
    assert.equal(r.buffer, previous.buffer)
    assert.equal(r.maxAge, 77)
    assert.equal(r.contentType, 'image/webp')
  })
})
