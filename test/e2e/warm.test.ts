/**
 * `next-image-sidecar warm` against the example app: a warmed cache serves a first page view
 * entirely as HITs, a second run resumes, failures are reported, placeholders are warmed on
 * request, and warming alongside live traffic encodes a variant once.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Browser } from 'playwright-core'
import { freePort, nextBuild, startNext, REPO, type RunningNext } from '../helpers/next-app.js'
import { launchBrowser } from '../helpers/browser.js'
import { metric } from '../helpers/metrics.js'
import { CLI, startCli } from '../helpers/cli.js'
import { createClient } from '@redis/client'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { waitUntil } from '../helpers/wait.js'
import { cacheKey } from '../../sidecar/cache/key.js'

const APP = join(REPO, 'example-next-app')
const CONFIG = join(APP, 'next.config.mjs')

let next: RunningNext
let browser: Browser
let sidecarPort: number
let cache: string

/** Runs the CLI to completion; resolves with its exit code and output (a non-zero exit is data here). */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return promisify(execFile)(process.execPath, [CLI, ...args], { env: { ...process.env, LOG_LEVEL: 'error' } }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  )
}

before(async () => {
  sidecarPort = await freePort()
  const env = { IMAGE_SIDECAR_URL: `http://127.0.0.1:${sidecarPort}`, EXAMPLE_DIST_DIR: '.next-e2e-warm' }
  nextBuild(APP, env)
  next = await startNext(APP, env)
  browser = await launchBrowser()
  cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-warm-')), 'cache.sqlite')}`
})

after(async () => {
  await browser?.close()
  await next?.stop()
})

test('after warm --pages, a first page view is served entirely from the cache', async () => {
  const run = await cli(['warm', '--pages', `${next.url}/`, `${next.url}/gallery`, '--frontend', next.url, '--config', CONFIG, '--cache', cache])
  assert.equal(run.code, 0, run.stdout + run.stderr)
  assert.match(run.stdout, /warm: \d+ variants: \d+ warmed, 0 already fresh, 0 failed/)

  const sidecar = await startCli(['--port', String(sidecarPort), '--frontend', next.url, '--config', CONFIG, '--cache', cache])
  try {
    const results: Array<{ url: string; cache: string | undefined; status: number }> = []
    for (const path of ['/', '/gallery']) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
      const page = await context.newPage()
      page.on('response', (res) => {
        if (res.url().includes('/_next/image')) results.push({ url: res.url(), cache: res.headers()['x-nextjs-cache'], status: res.status() })
      })
      await page.goto(`${next.url}${path}`, { waitUntil: 'load' })
      await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight))
      await page.waitForFunction(() => [...document.images].every((img) => img.complete && img.naturalWidth > 0), undefined, { timeout: 60_000 })
      await context.close()
    }
    assert.ok(results.length >= 10, `only ${results.length} image requests`)
    for (const r of results) {
      assert.equal(r.status, 200, r.url)
      assert.equal(r.cache, 'HIT', r.url)
    }
  } finally {
    sidecar.child.kill('SIGTERM')
  }
})

test('a second run skips everything that is still fresh', async () => {
  const run = await cli(['warm', '--pages', `${next.url}/`, `${next.url}/gallery`, '--frontend', next.url, '--config', CONFIG, '--cache', cache])
  assert.equal(run.code, 0)
  const [, total, warmed, fresh] = /warm: (\d+) variants: (\d+) warmed, (\d+) already fresh/.exec(run.stdout) ?? []
  assert.equal(Number(warmed), 0)
  assert.equal(Number(fresh), Number(total))
})

test('a failing image is reported with its reason and does not stop the run', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'nis-warm-urls-')), 'urls.txt')
  writeFileSync(file, ['# one broken, one good', '/_next/image?url=%2Fphotos%2Fmissing.jpg&w=640&q=75', '/_next/image?url=%2Fphotos%2Fdusk.png&w=640&q=50'].join('\n'))
  const run = await cli(['warm', '--urls', file, '--frontend', next.url, '--config', CONFIG, '--cache', 'memory://'])
  assert.equal(run.code, 1)
  assert.match(run.stdout, /4 variants: 2 warmed, 0 already fresh, 2 failed/)
  assert.match(run.stdout, /failed: \/_next\/image\?url=%2Fphotos%2Fmissing\.jpg.*: 404 "url" parameter is valid but internal response is invalid/)
})

test('--dry-run prints the plan and warms nothing', async () => {
  const run = await cli(['warm', '--from', APP, '--frontend', next.url, '--config', CONFIG, '--cache', 'memory://', '--dry-run'])
  assert.equal(run.code, 0)
  assert.match(run.stderr, /image requests × 2 formats \(image\/webp, source format\) = \d+ variants/)
  assert.match(run.stdout, /^image\/webp +\/_next\/image\?url=%2Fphotos%2Fdawn\.jpg&w=640&q=75$/m)
})

test('after warm --pages --placeholders, the placeholder of every source on the pages is a HIT', async () => {
  const placeholderCache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-warm-ph-')), 'cache.sqlite')}`
  const args = ['warm', '--pages', `${next.url}/`, `${next.url}/gallery`, '--placeholders', '--frontend', next.url, '--config', CONFIG, '--cache', placeholderCache]
  // The plan names the sources; each must then be answered from the store.
  const plan = await cli([...args, '--dry-run'])
  const paths = plan.stdout.split('\n').filter((l) => l.startsWith('placeholder ')).map((l) => l.slice('placeholder '.length))
  assert.ok(paths.length >= 5, plan.stdout)
  const run = await cli(args)
  assert.equal(run.code, 0, run.stdout + run.stderr)
  assert.match(run.stdout, new RegExp(`warm: ${paths.length} placeholders: ${paths.length} warmed, 0 already fresh, 0 failed`))
  const sidecar = await startCli(['--frontend', next.url, '--config', CONFIG, '--cache', placeholderCache])
  try {
    for (const path of paths) {
      const res = await fetch(`${sidecar.url}${path}`)
      const body = await res.text()
      assert.equal(res.status, 200, `${path}: ${body}`)
      assert.equal(res.headers.get('x-sidecar-cache'), 'HIT', path)
    }
  } finally {
    sidecar.child.kill('SIGTERM')
  }
})

test('warming alongside live traffic for the same variant encodes it once (shared Redis)', async () => {
  const redis = await PrivateRedis.start()
  const prefix = uniquePrefix('warm-live')
  const shared = ['--frontend', next.url, '--config', CONFIG, '--cache', redis.url, '--cache-prefix', prefix]
  const live = await startCli(shared)
  const client = createClient({ url: redis.url })
  await client.connect()
  try {
    const file = join(mkdtempSync(join(tmpdir(), 'nis-warm-urls-')), 'urls.txt')
    const path = '/_next/image?url=%2Fphotos%2Fdawn.jpg&w=3840&q=90'
    writeFileSync(file, `${path}\n`)
    const warming = cli(['warm', '--urls', file, ...shared])
    // The live requests go out while warm holds the WebP variant's single-flight lock, so the two
    // really overlap (otherwise "encoded once" would hold trivially, one after the other).
    const lock = `${prefix}lock:${cacheKey('/photos/dawn.jpg', 3840, 90, 'image/webp', 16)}`
    await waitUntil(async () => (await client.exists(lock)) === 1, 'warm to take the WebP variant’s lock', 30_000, 5)
    const liveResults = await Promise.all(
      Array.from({ length: 16 }, () => fetch(`${live.url}${path}`, { headers: { accept: 'image/webp' } }).then(async (r) => (await r.arrayBuffer(), r.headers.get('x-nextjs-cache')))),
    )
    const run = await warming
    assert.equal(run.code, 0, run.stdout + run.stderr)
    // Every live request waited for warm's job (none found the entry already there).
    assert.deepEqual([...new Set(liveResults)], ['MISS'])
    const warmTransforms = Number(/, (\d+) transforms here/.exec(run.stdout)?.[1])
    const liveTransforms = metric(await (await fetch(`${live.url}/metrics`)).text(), 'next_image_sidecar_transforms_total')
    // Two variants exist (WebP and the JPEG fallback); warm encoded both, the live traffic none.
    assert.equal(warmTransforms, 2)
    assert.equal(liveTransforms, 0)
  } finally {
    await client.close()
    live.child.kill('SIGTERM')
    await redis.kill()
  }
})
