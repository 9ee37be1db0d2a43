/**
 * Blur placeholders in a real browser (issue #24): the example app's /placeholders page is a Server
 * Component that asks the sidecar (`getImagePlaceholder`) for a remote image and a public/ image.
 * The sidecar's image responses are held back by a loopback proxy in front of its public URL (the
 * placeholder endpoint goes straight through), so the page is seen while its images are in flight:
 * each <img> paints Next's blurred placeholder in its final box, and when the images are let through
 * they replace it with no layout shift.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import type { Browser, Page } from 'playwright-core'
import { freePort, nextBuild, REPO, startNext, type RunningNext } from '../helpers/next-app.js'
import { CORPUS, startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { launchBrowser } from '../helpers/browser.js'
import { silentLogger } from '../helpers/sidecar.js'
import { installPackedFrontend } from '../helpers/packages.js'
import { startHoldingProxy, type HoldingProxy } from '../helpers/holding-proxy.js'
import { waitUntil } from '../helpers/wait.js'
import { createSidecar, type Sidecar } from '../../sidecar/server/app.js'
import { loadNextConfig } from '../../sidecar/next/next-config.js'

const APP = join(REPO, 'example-next-app')
// As the other browser tests: the app uses the frontend package installed from its tarball.
installPackedFrontend(APP)
const DIST_DIR = '.next-e2e-placeholder'
const REMOTE_PATH = '/corpus/photo-jpeg/rocket.jpg'

interface ImageState {
  backgroundImage: string
  complete: boolean
  naturalWidth: number
  currentSrc: string
  width: string | null
  height: string | null
  placeholderError: string | null
  rect: { x: number; y: number; width: number; height: number }
}
interface Expected {
  src: string
  /** Intrinsic size, read from the file itself (sharp), the oracle for what the sidecar answers. */
  width: number
  height: number
  /** The sidecar's own answer for the source, asked directly. */
  blurDataURL: string
  blurWidth: number
  blurHeight: number
}

let upstream: UpstreamServer
let sidecar: Sidecar
let stopSidecarServer: () => void
let proxy: HoldingProxy
let next: RunningNext
let browser: Browser
let page: Page
const expected = new Map<string, Expected>()
let beforeRelease: Record<string, ImageState>
let afterRelease: Record<string, ImageState>
const screenshots = new Map<string, Buffer>()
let layoutShifts: Array<{ value: number; hadRecentInput: boolean; sources: string[] }>

const IDS = ['placeholder-remote', 'placeholder-public'] as const

function readImages(page: Page): Promise<Record<string, ImageState>> {
  return page.evaluate((ids) => {
    const states: Record<string, ImageState> = {}
    for (const id of ids) {
      const img = document.getElementById(id) as HTMLImageElement | null
      if (!img) throw new Error(`no #${id} on the page`)
      const { x, y, width, height } = img.getBoundingClientRect()
      states[id] = {
        backgroundImage: getComputedStyle(img).backgroundImage,
        complete: img.complete,
        naturalWidth: img.naturalWidth,
        currentSrc: img.currentSrc,
        width: img.getAttribute('width'),
        height: img.getAttribute('height'),
        placeholderError: img.getAttribute('data-placeholder-error'),
        rect: { x, y, width, height },
      }
    }
    return states
  }, IDS)
}

before(async () => {
  upstream = await startUpstream()
  const [proxyPort, sidecarPort] = [await freePort(), await freePort()]
  const remote = `${upstream.url}${REMOTE_PATH}`
  // The app is built against the proxy: browsers and the page's getImagePlaceholder both reach the sidecar through it.
  const buildEnv = { EXAMPLE_REMOTE_IMAGE: remote, EXAMPLE_DIST_DIR: DIST_DIR, IMAGE_SIDECAR_URL: `http://127.0.0.1:${proxyPort}` }
  nextBuild(APP, buildEnv)
  // No sidecar URL at run time: the helper finds the one withImageSidecar baked in at build.
  next = await startNext(APP, { EXAMPLE_REMOTE_IMAGE: remote, EXAMPLE_DIST_DIR: DIST_DIR })

  Object.assign(process.env, { EXAMPLE_REMOTE_IMAGE: remote })
  sidecar = createSidecar({
    frontend: next.url,
    nextConfig: await loadNextConfig(join(APP, 'next.config.mjs')),
    cache: `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-placeholder-e2e-')), 'cache.sqlite')}`,
    logger: silentLogger,
  })
  const server = await sidecar.listen(sidecarPort, '127.0.0.1')
  stopSidecarServer = () => {
    server.close()
    server.closeAllConnections()
  }
  proxy = await startHoldingProxy(`http://127.0.0.1:${sidecarPort}`, proxyPort, (path) => path.includes('/_next/image?'))

  for (const [id, src, file] of [
    ['placeholder-remote', remote, join(CORPUS, 'photo-jpeg/rocket.jpg')],
    ['placeholder-public', '/photos/dawn.jpg', join(APP, 'public/photos/dawn.jpg')],
  ] as const) {
    const { width, height } = await sharp(file).metadata()
    const res = await fetch(`http://127.0.0.1:${sidecarPort}/_sidecar/placeholder?url=${encodeURIComponent(src)}`)
    assert.equal(res.status, 200, `the sidecar's placeholder for ${src}: ${res.status} ${await res.clone().text()}`)
    const answer = (await res.json()) as Expected
    expected.set(id, { src, width: width!, height: height!, blurDataURL: answer.blurDataURL, blurWidth: answer.blurWidth, blurHeight: answer.blurHeight })
  }

  browser = await launchBrowser()
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  // From the first byte of the document, so every shift of the page's life is counted.
  await page.addInitScript(() => {
    const shifts: unknown[] = ((window as any).__layoutShifts = [])
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries() as any[]) {
        shifts.push({ value: entry.value, hadRecentInput: entry.hadRecentInput, sources: (entry.sources ?? []).map((s: any) => s.node?.id || s.node?.nodeName || '?') })
      }
    }).observe({ type: 'layout-shift', buffered: true })
  })
  // 'load' would wait for the held images.
  await page.goto(`${next.url}/placeholders`, { waitUntil: 'domcontentloaded' })
  const heldSources = () => new Set(proxy.held.map((path) => new URL(path, 'http://x').searchParams.get('url')))
  await waitUntil(() => [...expected.values()].every(({ src }) => heldSources().has(src)), 'the browser to request both images (held by the proxy)', 30_000)

  beforeRelease = await readImages(page)
  for (const id of IDS) screenshots.set(id, await page.locator(`#${id}`).screenshot({ timeout: 10_000 }))

  proxy.release()
  await page.waitForFunction(
    (ids) =>
      ids.every((id) => {
        const img = document.getElementById(id) as HTMLImageElement
        return img.complete && img.naturalWidth > 0 && getComputedStyle(img).backgroundImage === 'none'
      }),
    IDS,
    { timeout: 30_000 },
  )
  afterRelease = await readImages(page)
  // Two frames after the last change, so a shift it caused has been delivered to the observer.
  layoutShifts = await page.evaluate(
    () =>
      new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => resolve((window as any).__layoutShifts), 0)))),
  )
})

after(async () => {
  proxy?.release()
  await browser?.close()
  stopSidecarServer?.()
  await sidecar?.close()
  await proxy?.close()
  await Promise.all([next?.stop(), upstream?.close()])
})

test('before the image arrives, each <img> shows Next’s blur placeholder made from the sidecar’s blurDataURL', () => {
  for (const id of IDS) {
    const state = beforeRelease[id]!
    const want = expected.get(id)!
    assert.equal(state.complete, false, `${id} had already loaded: the proxy did not hold it`)
    assert.equal(state.naturalWidth, 0)
    assert.ok(want.blurDataURL?.startsWith('data:image/jpeg;base64,'), `${id}: the sidecar answered blurDataURL ${want.blurDataURL}`)
    const background = state.backgroundImage
    assert.ok(background.startsWith('url("data:image/svg+xml;charset=utf-8,'), `${id} (placeholder error: ${state.placeholderError}): background-image ${background.slice(0, 120)}`)
    assert.ok(background.includes('feGaussianBlur'), `${id}: not Next's blur SVG: ${background.slice(0, 200)}`)
    assert.ok(background.includes(`href='${want.blurDataURL}'`), `${id}: the sidecar's blurDataURL is not in ${background.slice(0, 200)}…`)
    // blurWidth/blurHeight reached getImgProps: the SVG's viewBox is the one a static import gets.
    assert.ok(background.includes(`viewBox='0 0 ${want.blurWidth * 40} ${want.blurHeight * 40}'`), `${id}: viewBox of ${background.slice(0, 200)}`)
  }
})

test('the blur paints colours: a screenshot of each image box is not blank or uniform', async () => {
  for (const id of IDS) {
    const { data, info } = await sharp(screenshots.get(id)!).removeAlpha().raw().toBuffer({ resolveWithObject: true })
    const colours = new Set<number>()
    for (let i = 0; i < data.length; i += info.channels) colours.add((data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!)
    const { channels } = await sharp(screenshots.get(id)!).removeAlpha().stats()
    const spread = Math.max(...channels.map((c) => c.stdev))
    assert.ok(colours.size >= 64 && spread >= 4, `${id}: ${colours.size} colours, largest channel stdev ${spread.toFixed(2)} (${info.width}x${info.height})`)
  }
})

test('the <img> box has its final size before the image arrives: width and height are the intrinsic ones from the sidecar', () => {
  for (const id of IDS) {
    const state = beforeRelease[id]!
    const want = expected.get(id)!
    assert.deepEqual([state.width, state.height], [String(want.width), String(want.height)], `${id} (placeholder error: ${state.placeholderError})`)
    assert.ok(state.rect.width > 0 && state.rect.height > 0, `${id}: empty box ${JSON.stringify(state.rect)}`)
    assert.ok(Math.abs(state.rect.height - (state.rect.width * want.height) / want.width) <= 1, `${id}: box ${JSON.stringify(state.rect)} vs ${want.width}x${want.height}`)
  }
})

test('when the image arrives it loads from the sidecar and Next removes the placeholder', () => {
  for (const id of IDS) {
    const state = afterRelease[id]!
    assert.ok(state.complete && state.naturalWidth > 0, `${id} did not load`)
    assert.ok(state.currentSrc.startsWith(`${proxy.url}/_next/image?`), `${id} came from ${state.currentSrc}`)
    assert.equal(state.backgroundImage, 'none')
  }
})

test('no layout shift when the images arrive: cumulative layout shift 0 and each box in the same place and size', () => {
  const cls = layoutShifts.filter((shift) => !shift.hadRecentInput).reduce((sum, shift) => sum + shift.value, 0)
  assert.equal(cls, 0, `layout shifts: ${JSON.stringify(layoutShifts)}`)
  for (const id of IDS) {
    const [was, is] = [beforeRelease[id]!.rect, afterRelease[id]!.rect]
    assert.deepEqual([is.x, is.y, is.width], [was.x, was.y, was.width], id)
    // With height: auto the loaded variant's own ratio wins, and Next's resize rounds its height to a
    // whole pixel (2400x1600 at w=640 is 640x427): a fraction of a pixel, which is no layout shift.
    assert.ok(Math.abs(is.height - was.height) < 1, `${id}: height ${was.height} before, ${is.height} after`)
  }
})
