/**
 * End to end with `images.formats: ['image/avif', 'image/webp']`: Chromium accepts AVIF, so every
 * <Image> of the example app arrives from the sidecar as AVIF and decodes; a client that does not
 * accept it gets WebP for the same URL.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Server } from 'node:http'
import type { Browser } from 'playwright-core'
import { freePort, nextBuild, startNext, REPO, type RunningNext } from '../helpers/next-app.js'
import { launchBrowser, loadImages, type LoadedImage } from '../helpers/browser.js'
import { silentLogger } from '../helpers/sidecar.js'
import { createSidecar, type Sidecar } from '../../sidecar/server/app.js'
import { loadNextConfig } from '../../sidecar/next/next-config.js'

const APP = join(REPO, 'example-next-app')

let browser: Browser
let app: RunningNext
let sidecar: Sidecar
let server: Server
let origin: string
let images: LoadedImage[]
const responses = new Map<string, { contentType: string; accept: string }>()

before(async () => {
  const port = await freePort()
  origin = `http://127.0.0.1:${port}`
  const env = { IMAGE_SIDECAR_URL: origin, EXAMPLE_DIST_DIR: '.next-e2e-avif', EXAMPLE_AVIF: '1' }
  nextBuild(APP, env)
  ;[app, browser] = await Promise.all([startNext(APP, env), launchBrowser()])
  // The sidecar reads the same next.config as the app, evaluated with EXAMPLE_AVIF=1.
  const previous = process.env.EXAMPLE_AVIF
  process.env.EXAMPLE_AVIF = '1'
  const nextConfig = await loadNextConfig(join(APP, 'next.config.mjs'))
  if (previous === undefined) delete process.env.EXAMPLE_AVIF
  else process.env.EXAMPLE_AVIF = previous
  sidecar = createSidecar({ frontend: app.url, nextConfig, cache: `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-e2e-avif-')), 'cache.sqlite')}`, logger: silentLogger })
  server = await sidecar.listen(port, '127.0.0.1')

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  const seen: Array<Promise<void>> = []
  page.on('response', (res) => {
    if (!res.url().includes('/_next/image')) return
    // The Accept header the network stack really sent is only in allHeaders().
    seen.push(res.request().allHeaders().then((sent) => void responses.set(res.url(), { contentType: res.headers()['content-type'] ?? '', accept: sent.accept ?? '' })))
  })
  images = await loadImages(page, `${app.url}/gallery`)
  await Promise.all(seen)
  await page.close()
})

after(async () => {
  await browser?.close()
  server?.close()
  server?.closeAllConnections()
  await sidecar?.close()
  await app?.stop()
})

test('the config the sidecar read negotiates AVIF first', () => {
  assert.deepEqual(sidecar.config.images.formats, ['image/avif', 'image/webp'])
})

test('Chromium accepts AVIF and every image arrives from the sidecar as AVIF and decodes', () => {
  assert.ok(images.length >= 12, `only ${images.length} images`)
  for (const img of images) {
    assert.ok(img.naturalWidth > 0, `${img.id} did not decode`)
    assert.ok(img.currentSrc.startsWith(`${origin}/_next/image?`), `${img.id} came from ${img.currentSrc}`)
    const response = responses.get(img.currentSrc)
    assert.match(response?.accept ?? '', /image\/avif/)
    assert.equal(response?.contentType, 'image/avif', `${img.id}: ${img.currentSrc}`)
  }
})

test('the same URL answers WebP to a client that does not accept AVIF, with Vary: Accept', async () => {
  const res = await fetch(images[0]!.currentSrc, { headers: { accept: 'image/webp,*/*' } })
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'image/webp')
  assert.equal(res.headers.get('vary'), 'Accept')
})
