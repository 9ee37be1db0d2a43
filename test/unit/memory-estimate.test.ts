/**
 * The working-set estimate for sources whose decoder cannot stream: progressive JPEG (libjpeg keeps
 * every DCT coefficient of the image, shrink-on-load or not) and interlaced PNG (decoded whole).
 * The sizes are what `npm run bench:estimate` measured (README, Memory).
 */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { estimateWorkingSet } from '../../sidecar/image/memory-estimate.js'

const MiB = 1024 ** 2
const PIXELS = 6000 * 4000

describe('the working-set estimate of sources decoded whole', () => {
  const baseline = { format: 'jpeg', width: 6000, height: 4000, channels: 3, depth: 'uchar', chromaSubsampling: '4:2:0', isProgressive: false }
  const progressive = { ...baseline, isProgressive: true }
  test('a progressive 4:2:0 JPEG adds its coefficient buffer: 2 bytes × 1.5 coefficients a pixel (69 MiB measured at 6000×4000)', () => {
    const extra = estimateWorkingSet(progressive, 5_000_000, 640, 'image/webp') - estimateWorkingSet(baseline, 5_000_000, 640, 'image/webp')
    assert.ok(extra >= 3 * PIXELS, `extra ${extra / MiB} MiB`)
    assert.ok(extra < 3.1 * PIXELS, `extra ${extra / MiB} MiB`)
  })
  test('the coefficient buffer does not shrink with the output: the same at 640 and 1920 px', () => {
    const at = (width: number) => estimateWorkingSet(progressive, 5_000_000, width, 'image/webp') - estimateWorkingSet(baseline, 5_000_000, width, 'image/webp')
    assert.equal(at(640), at(1920))
  })
  test('a progressive 4:4:4 JPEG holds twice the coefficients of a 4:2:0 one', () => {
    const full = { ...progressive, chromaSubsampling: '4:4:4' }
    const extra = estimateWorkingSet(full, 5_000_000, 640, 'image/webp') - estimateWorkingSet({ ...full, isProgressive: false }, 5_000_000, 640, 'image/webp')
    assert.ok(extra >= 6 * PIXELS)
  })
  test('a progressive CMYK JPEG counts its fourth, full-size component', () => {
    const cmyk = { ...progressive, channels: 4, chromaSubsampling: '4:2:0:4' }
    const extra = estimateWorkingSet(cmyk, 5_000_000, 640, 'image/webp') - estimateWorkingSet({ ...cmyk, isProgressive: false }, 5_000_000, 640, 'image/webp')
    assert.ok(extra >= 5 * PIXELS)
  })
  test('a progressive JPEG with no subsampling reported counts every channel at full size', () => {
    const unknown = { ...progressive, chromaSubsampling: undefined }
    const extra = estimateWorkingSet(unknown, 5_000_000, 640, 'image/webp') - estimateWorkingSet({ ...unknown, isProgressive: false }, 5_000_000, 640, 'image/webp')
    assert.ok(extra >= 6 * PIXELS)
  })
  test('an interlaced PNG is decoded whole: every pixel held at once', () => {
    const png = { format: 'png', width: 6000, height: 4000, channels: 3, depth: 'uchar', isProgressive: false }
    const extra = estimateWorkingSet({ ...png, isProgressive: true }, 60_000_000, 640, 'image/webp') - estimateWorkingSet(png, 60_000_000, 640, 'image/webp')
    assert.ok(extra >= 3 * PIXELS)
  })
})

describe('the estimate against a real transform', () => {
  test('a progressive 6000×4000 JPEG → 640 WebP: the estimate covers the observed peak growth', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-estimate-'))
    try {
      const file = join(dir, 'progressive.jpg')
      const source = new URL('../../../shared/corpus/large/elephants-3840x2160.jpg', import.meta.url)
      writeFileSync(file, await sharp(source.pathname).resize(6000, 4000, { fit: 'fill' }).jpeg({ quality: 85, progressive: true }).toBuffer())
      // A fresh process, one libvips thread, as `npm run bench:estimate` measures: earlier work leaves nothing behind.
      const probe = `
        const { readFileSync } = await import('node:fs')
        const sharp = (await import('sharp')).default
        const { optimizeImage, configureSharp, workingSetOf } = await import(${JSON.stringify(new URL('../../sidecar/image/transform.ts', import.meta.url).href)})
        const { resolveNextConfig } = await import(${JSON.stringify(new URL('../../sidecar/next/images-config.ts', import.meta.url).href)})
        const config = resolveNextConfig({}).sharp
        configureSharp(config, 1)
        const buffer = readFileSync(${JSON.stringify(file)})
        const m = await sharp(buffer).metadata()
        // What admission reserves: the estimate from the header, as the request path computes it.
        const estimate = await workingSetOf(buffer, 640, 'image/webp', config)
        globalThis.gc()
        const before = process.memoryUsage().rss
        await optimizeImage(buffer, 'image/webp', 640, 75, config)
        console.log(JSON.stringify({ progressive: m.isProgressive, estimate, observed: process.resourceUsage().maxRSS * 1024 - before }))`
      const out = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', probe], { cwd: new URL('../..', import.meta.url).pathname, encoding: 'utf8' })
      const { progressive, estimate, observed } = JSON.parse(out.trim().split('\n').at(-1)!) as { progressive: boolean; estimate: number; observed: number }
      assert.equal(progressive, true)
      // Measured: ~75 MiB; the coefficient buffer alone is 69 MiB.
      assert.ok(observed > 60 * MiB, `observed ${(observed / MiB).toFixed(1)} MiB`)
      assert.ok(estimate >= observed, `estimate ${(estimate / MiB).toFixed(1)} MiB < observed ${(observed / MiB).toFixed(1)} MiB`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
