/**
 * End to end, in a real browser: the example app built with the sidecar URL serves every
 * <Image> from the sidecar; built without it, Next's own /_next/image serves them.
 * NEXT_MAJOR=15 builds and serves the same app with Next 15.5 (browser-next15.test.ts does).
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, realpathSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { exampleAppFor, freePort, nextBuild, nextMajorFromEnv, startNext, type RunningNext } from '../helpers/next-app.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { launchBrowser, loadImages, type LoadedImage } from '../helpers/browser.js'
import { silentLogger } from '../helpers/sidecar.js'
import { installPackedFrontend } from '../helpers/packages.js'
import { createSidecar } from '../../sidecar/server/app.js'
import { loadNextConfig } from '../../sidecar/next/next-config.js'
import { detectNextVersion, majorOfVersion } from '../../sidecar/next/next-version.js'

const MAJOR = nextMajorFromEnv()
const APP = exampleAppFor(MAJOR)
// The app uses the frontend package as a user would: installed from its packed tarball, not the source tree.
installPackedFrontend(APP)
const PAGES = ['/', '/gallery']

let upstream: UpstreamServer
let browser: Browser
let withSidecar: RunningNext
let fallback: RunningNext
let sidecarOrigin: string
let stopSidecar: () => Promise<void>
let withBasePath: RunningNext
let basePathOrigin: string
let basePathImages: LoadedImage[]
const contentTypes = new Map<string, string>()
/** Every optimizer request the browser made, in every mode: SVGs must never be among them. */
const optimizerRequests: string[] = []
/** The images next/image serves as they are (SVGs without dangerouslyAllowSVG, `unoptimized`), as Next decides. */
const AS_IS = new Set(['logo-svg', 'mark-svg', 'unoptimized-dusk'])
const optimized = (images: LoadedImage[]) => images.filter((img) => !AS_IS.has(img.id))
const asIs = (images: LoadedImage[]) => images.filter((img) => AS_IS.has(img.id))
const optimizedSource = (url: string) => new URL(url).searchParams.get('url') ?? ''
const results: Record<'sidecar' | 'fallback', Record<string, LoadedImage[]>> = { sidecar: {}, fallback: {} }

async function visit(page: Page, origin: string, path: string): Promise<LoadedImage[]> {
  page.on('response', (res) => {
    if (res.url().includes('/_next/image')) contentTypes.set(res.url(), res.headers()['content-type'] ?? '')
  })
  page.on('request', (req) => {
    if (req.url().includes('/_next/image')) optimizerRequests.push(req.url())
  })
  return loadImages(page, `${origin}${path}`)
}

before(async () => {
  upstream = await startUpstream()
  const [sidecarPort, basePathPort] = [await freePort(), await freePort()]
  sidecarOrigin = `http://127.0.0.1:${sidecarPort}`
  basePathOrigin = `http://127.0.0.1:${basePathPort}`
  const common = { EXAMPLE_REMOTE_IMAGE: `${upstream.url}/corpus/photo-jpeg/rocket.jpg` }
  const sidecarEnv = { ...common, IMAGE_SIDECAR_URL: sidecarOrigin, EXAMPLE_DIST_DIR: '.next-e2e-sidecar' }
  const fallbackEnv = { ...common, EXAMPLE_DIST_DIR: '.next-e2e-fallback' }
  const basePathEnv = { IMAGE_SIDECAR_URL: basePathOrigin, EXAMPLE_DIST_DIR: '.next-e2e-basepath', EXAMPLE_BASE_PATH: '/shop' }
  nextBuild(APP, sidecarEnv)
  nextBuild(APP, fallbackEnv)
  nextBuild(APP, basePathEnv)
  // Settled one by one, so that when one fails the others are still stopped by after() (no orphan next start).
  const started = await Promise.allSettled([startNext(APP, sidecarEnv), startNext(APP, fallbackEnv), startNext(APP, basePathEnv), launchBrowser()])
  const value = <T,>(result: PromiseSettledResult<T>) => (result.status === 'fulfilled' ? result.value : undefined)
  withSidecar = value(started[0])!
  fallback = value(started[1])!
  withBasePath = value(started[2])!
  browser = value(started[3])!
  const failed = started.find((result) => result.status === 'rejected')
  if (failed) throw (failed as PromiseRejectedResult).reason

  // The sidecar reads the app's own next.config, and detects its Next major, as the CLI does with --config.
  Object.assign(process.env, common)
  const nextVersion = majorOfVersion(detectNextVersion(join(APP, 'next.config.mjs'))!, 'the app')
  assert.equal(nextVersion, MAJOR)
  const sidecar = createSidecar({
    frontend: withSidecar.url,
    nextConfig: await loadNextConfig(join(APP, 'next.config.mjs')),
    nextVersion,
    // The remote image is on 127.0.0.1: Next 15 has no guard to lift in its config; ours is lifted here.
    dangerouslyAllowLocalIP: nextVersion === 15,
    cache: `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-e2e-')), 'cache.sqlite')}`,
    logger: silentLogger,
  })
  const server = await sidecar.listen(sidecarPort, '127.0.0.1')
  // The basePath variant: the same next.config evaluated with EXAMPLE_BASE_PATH=/shop.
  const shop = createSidecar({
    frontend: withBasePath.url,
    nextConfig: { ...(await loadNextConfig(join(APP, 'next.config.mjs'))), basePath: '/shop' },
    nextVersion,
    cache: 'memory://',
    logger: silentLogger,
  })
  const shopServer = await shop.listen(basePathPort, '127.0.0.1')
  stopSidecar = async () => {
    for (const s of [server, shopServer]) {
      s.close()
      s.closeAllConnections()
    }
    await Promise.all([sidecar.close(), shop.close()])
  }

  for (const [name, origin] of [['sidecar', withSidecar.url], ['fallback', fallback.url]] as const) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    for (const path of PAGES) results[name][path] = await visit(page, origin, path)
    await page.close()
  }
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  basePathImages = await visit(page, withBasePath.url, '/shop')
  await page.close()
})

after(async () => {
  await browser?.close()
  await stopSidecar?.()
  await Promise.all([withSidecar?.stop(), fallback?.stop(), withBasePath?.stop(), upstream?.close()])
})

describe(`Next ${MAJOR}, built with IMAGE_SIDECAR_URL`, () => {
  for (const path of PAGES) {
    test(`${path}: every optimized image loads from the sidecar origin as WebP`, () => {
      const images = optimized(results.sidecar[path]!)
      assert.ok(images.length >= (path === '/' ? 6 : 12), `only ${images.length} images on ${path}`)
      for (const img of images) {
        assert.ok(img.naturalWidth > 0, `${img.id} did not load`)
        assert.ok(img.currentSrc.startsWith(`${sidecarOrigin}/_next/image?`), `${img.id} came from ${img.currentSrc}`)
        assert.equal(contentTypes.get(img.currentSrc), 'image/webp', `${img.id}: ${img.currentSrc}`)
      }
    })
    test(`${path}: srcset widths and qualities are exactly the ones Next generates`, () => {
      const ours = results.sidecar[path]!.map((img) => img.srcset.replaceAll(sidecarOrigin, ''))
      const nexts = results.fallback[path]!.map((img) => img.srcset)
      assert.deepEqual(ours, nexts)
    })
  }
  test('the SVGs and the unoptimized image load as they are from the frontend, as without the sidecar', () => {
    const images = asIs(results.sidecar['/']!)
    assert.deepEqual(images.map((img) => img.id).sort(), [...AS_IS].sort())
    for (const img of images) {
      assert.ok(img.naturalWidth > 0, `${img.id} did not load`)
      assert.ok(img.currentSrc.startsWith(`${withSidecar.url}/`) && !img.currentSrc.includes('/_next/image'), `${img.id} came from ${img.currentSrc}`)
      assert.equal(img.srcset, '')
    }
    const same = (list: LoadedImage[]) => asIs(list).map((img) => [img.id, new URL(img.currentSrc).pathname])
    assert.deepEqual(same(results.sidecar['/']!), same(results.fallback['/']!))
  })
  test('the remote image is fetched by the sidecar from its origin', () => {
    const remote = results.sidecar['/']!.find((img) => img.id === 'remote')!
    assert.ok(remote.naturalWidth > 0)
    assert.ok(upstream.requests.some((r) => r.url === '/corpus/photo-jpeg/rocket.jpg'))
  })
  test('Next’s own /_next/image stays up in this build (loader "default" + loaderFile): the fallback a gateway needs', async () => {
    const res = await fetch(`${withSidecar.url}/_next/image?url=%2Fphotos%2Fdawn.jpg&w=640&q=75`, { headers: { accept: 'image/webp' } })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'image/webp')
  })
  test('the statically imported image gets the immutable Cache-Control', async () => {
    const hero = results.sidecar['/']!.find((img) => img.id === 'static-hero')!
    const res = await fetch(hero.currentSrc, { headers: { accept: 'image/webp' } })
    assert.equal(res.headers.get('cache-control'), 'public, max-age=315360000, immutable')
  })
})

describe(`Next ${MAJOR}, built without a sidecar URL (the fallback)`, () => {
  for (const path of PAGES) {
    test(`${path}: every optimized image loads from Next’s own /_next/image as WebP, the others as they are`, () => {
      const images = optimized(results.fallback[path]!)
      assert.ok(images.length > 0)
      for (const img of asIs(results.fallback[path]!)) assert.ok(img.naturalWidth > 0 && !img.currentSrc.includes('/_next/image'), `${img.id}: ${img.currentSrc}`)
      for (const img of images) {
        assert.ok(img.naturalWidth > 0, `${img.id} did not load`)
        assert.ok(img.currentSrc.startsWith(`${fallback.url}/_next/image?`), `${img.id} came from ${img.currentSrc}`)
        assert.equal(contentTypes.get(img.currentSrc), 'image/webp')
      }
    })
  }
})

describe(`Next ${MAJOR}, with a basePath`, () => {
  test('every optimized image loads from the sidecar under {basePath}/_next/image, the others as they are under the basePath', () => {
    assert.ok(optimized(basePathImages).length >= 5)
    for (const img of asIs(basePathImages)) {
      assert.ok(img.naturalWidth > 0, `${img.id} did not load`)
      assert.ok(img.currentSrc.startsWith(`${withBasePath.url}/shop/`) && !img.currentSrc.includes('/_next/image'), `${img.id} came from ${img.currentSrc}`)
    }
    for (const img of optimized(basePathImages)) {
      assert.ok(img.naturalWidth > 0, `${img.id} did not load`)
      assert.ok(img.currentSrc.startsWith(`${basePathOrigin}/shop/_next/image?url=%2Fshop%2F`), `${img.id} came from ${img.currentSrc}`)
      assert.equal(contentTypes.get(img.currentSrc), 'image/webp')
    }
  })
})

test('the app builds with the frontend package installed from its tarball, not with the source tree', () => {
  const resolved = realpathSync(createRequire(join(APP, 'package.json')).resolve('next-image-sidecar-loader'))
  assert.equal(resolved, join(APP, 'node_modules/next-image-sidecar-loader/dist/index.js'))
})

test('no SVG ever reaches an optimizer, in any mode', () => {
  assert.ok(optimizerRequests.length > 20, `only ${optimizerRequests.length} optimizer requests seen`)
  const svgs = optimizerRequests.filter((url) => optimizedSource(url).split('?', 1)[0]!.endsWith('.svg'))
  assert.deepEqual(svgs, [])
})
