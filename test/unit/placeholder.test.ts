/**
 * The placeholder's rules, without a server: blur size and formats (Next's own code as the oracle),
 * the displayed size, the key, the signature and the purge URL.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createHmac } from 'node:crypto'
import { blurSize, displayedSize, hasBlur, isAvifDecodeSafe } from '../../sidecar/next/blur.js'
import { cacheKey, placeholderKey } from '../../sidecar/cache/key.js'
import { optimizerUrl } from '../../sidecar/cache/purge-request.js'
import { signImageParams, signPlaceholder } from '../../sidecar/server/signature.js'
import { AVIF, BMP, GIF, ICO, JPEG, PNG, SVG, TIFF, WEBP } from '../../sidecar/next/image-types.js'
import { NEXT_PACKAGES } from '../helpers/next-app.js'
import { corpusFile } from '../helpers/upstream-server.js'

const require = createRequire(import.meta.url)
const nextBlur = require(join(NEXT_PACKAGES[16], 'dist/build/webpack/loaders/next-image-loader/blur.js')).getBlurImage as (
  content: Buffer,
  extension: string,
  size: { width: number; height: number },
  opts: { isDev: boolean; basePath?: string; outputPath: string },
) => Promise<{ width: number; height: number }>
const next15IsAvifDecodeSafe = require(join(NEXT_PACKAGES[15], 'dist/server/image-optimizer.js')).isAvifDecodeSafe as (v: string | null) => boolean

test('the blur size is Next\'s for every source size from 1 to 60 pixels a side and some large ones', async () => {
  // In dev, Next's getBlurImage computes the size without decoding (it returns a URL), so any still PNG does.
  const png = corpusFile('tiny/one-pixel.png')
  const sizes: Array<[number, number]> = []
  for (let w = 1; w <= 60; w++) for (let h = 1; h <= 60; h++) sizes.push([w, h])
  sizes.push([2560, 1600], [1600, 2560], [10000, 3], [3, 10000], [4095, 4096])
  for (const [width, height] of sizes) {
    const next = await nextBlur(png, 'png', { width, height }, { isDev: true, outputPath: '/x.png' })
    assert.deepEqual(blurSize(width, height), { blurWidth: next.width, blurHeight: next.height }, `${width}×${height}`)
  }
})

test('Next 16 blurs still JPEG, PNG, WebP and AVIF, nothing else', () => {
  for (const type of [JPEG, PNG, WEBP, AVIF]) assert.equal(hasBlur(type, 16, undefined), true, type)
  for (const type of [GIF, SVG, ICO, BMP, TIFF]) assert.equal(hasBlur(type, 16, '1.23.2'), false, type)
})

test('Next 15.5 blurs AVIF only when libheif decodes it safely', () => {
  assert.equal(hasBlur(AVIF, 15, '1.23.2'), true)
  assert.equal(hasBlur(AVIF, 15, '1.19.8'), false)
  assert.equal(hasBlur(AVIF, 15, undefined), false)
  assert.equal(hasBlur(JPEG, 15, undefined), true)
})

test('the libheif version rule is Next 15.5\'s isAvifDecodeSafe', () => {
  for (const version of [undefined, '', '1.23.2', '1.23.1', '1.24.0', '1.22.9', '2.0.0', '0.99.99', '1.23', 'x.y.z', '1.23.10', '1.23.2-rc1']) {
    assert.equal(isAvifDecodeSafe(version), next15IsAvifDecodeSafe(version ?? null), String(version))
  }
})

test('orientations 5 to 8 swap width and height; 1 to 4 and none keep them', () => {
  for (const o of [5, 6, 7, 8]) assert.deepEqual(displayedSize(400, 300, o), { width: 300, height: 400 }, String(o))
  for (const o of [undefined, 1, 2, 3, 4]) assert.deepEqual(displayedSize(400, 300, o), { width: 400, height: 300 }, String(o))
})

test('a placeholder key differs from every image key of the source, and per Next line', () => {
  const key = placeholderKey('/a.png', 16)
  assert.notEqual(key, placeholderKey('/a.png', 15))
  assert.notEqual(key, placeholderKey('/b.png', 16))
  for (const type of ['', 'image/webp', 'application/json', 'placeholder']) assert.notEqual(key, cacheKey('/a.png', 0, 0, type, 16))
})

test('the placeholder signature is HMAC-SHA256 over "placeholder\\n" + url, apart from any image signature', () => {
  const expected = createHmac('sha256', 'k').update('placeholder\n/a.png').digest('base64url')
  assert.equal(signPlaceholder('k', '/a.png'), expected)
  assert.notEqual(signPlaceholder('k', '/a.png'), signImageParams('k', '/a.png', '64', '75'))
})

test('a purged placeholder is listed at its own URL, an image at the optimizer\'s', () => {
  assert.equal(optimizerUrl({ href: 'https://cms.example/a b.jpg', width: 0, quality: 0, mimeType: 'application/json' }, '/docs'), '/_sidecar/placeholder?url=https%3A%2F%2Fcms.example%2Fa%20b.jpg')
  assert.equal(optimizerUrl({ href: '/a.jpg', width: 64, quality: 75, mimeType: 'image/webp' }, '/docs'), '/docs/_next/image?url=%2Fa.jpg&w=64&q=75')
})
