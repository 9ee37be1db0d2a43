/**
 * Same-origin gateway mode with Debian's real nginx and deploy/nginx.conf: images go through
 * nginx to the sidecar, and keep loading from the frontend's own optimizer once the sidecar dies.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Browser } from 'playwright-core'
import { freePort, nextBuild, startNext, REPO, type RunningNext } from '../helpers/next-app.js'
import { launchBrowser } from '../helpers/browser.js'
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js'
import { silentLogger } from '../helpers/sidecar.js'
import { createSidecar } from '../../sidecar/server/app.js'
import { loadNextConfig } from '../../sidecar/next/next-config.js'

const APP = join(REPO, 'example-next-app')
const NGINX = process.env.NGINX_PATH ?? '/usr/sbin/nginx'

let frontend: RunningNext
let nginx: ChildProcess
let gateway: string
let browser: Browser
let stopSidecar: () => Promise<void>
let dns: DnsServer

before(async () => {
  const env = { EXAMPLE_DIST_DIR: '.next-e2e-gateway' }
  nextBuild(APP, env)
  frontend = await startNext(APP, env)
  const sidecarPort = await freePort()
  const sidecar = createSidecar({ frontend: frontend.url, nextConfig: await loadNextConfig(join(APP, 'next.config.mjs')), cache: 'memory://', logger: silentLogger })
  const server = await sidecar.listen(sidecarPort, '127.0.0.1')
  stopSidecar = async () => {
    server.close()
    server.closeAllConnections()
    await sidecar.close()
  }

  // deploy/nginx.conf as shipped, the compose service names resolved by a DNS server standing in for Docker's.
  dns = await startDnsServer({ frontend: '127.0.0.1', sidecar: '127.0.0.1' })
  const gatewayPort = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'nis-nginx-'))
  const conf = readFileSync(join(REPO, 'deploy/nginx.conf'), 'utf8')
    .replace(/resolver 127\.0\.0\.11\b/, `resolver 127.0.0.1:${dns.port}`)
    .replaceAll('frontend:3000', `frontend:${frontend.port}`)
    .replaceAll('sidecar:3001', `sidecar:${sidecarPort}`)
    .replace('listen 8080', `listen 127.0.0.1:${gatewayPort}`)
    .replace('pid /tmp/nginx-next-image-gateway.pid', `pid ${dir}/nginx.pid`)
    .replaceAll('/tmp/nginx-', `${dir}/`)
  assert.notEqual(conf, readFileSync(join(REPO, 'deploy/nginx.conf'), 'utf8'))
  writeFileSync(join(dir, 'nginx.conf'), conf)
  nginx = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  gateway = `http://127.0.0.1:${gatewayPort}`
  for (let i = 0; ; i++) {
    try {
      await fetch(`${gateway}/`)
      break
    } catch {
      if (i > 100) throw new Error('nginx did not start')
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  nginx?.kill('SIGTERM')
  await stopSidecar?.()
  await frontend?.stop()
  await dns?.close()
})

/** Loads the home page through the gateway in a fresh context and reports who served each image. */
async function imagesThroughGateway(): Promise<Array<{ url: string; status: number; type: string; servedBy: string }>> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
  const page = await context.newPage()
  const seen: Array<{ url: string; status: number; type: string; servedBy: string }> = []
  page.on('response', (res) => {
    if (!res.url().includes('/_next/image')) return
    const h = res.headers()
    // helmet's CORP header is on every sidecar response and on none of Next's.
    seen.push({ url: res.url(), status: res.status(), type: h['content-type'] ?? '', servedBy: h['cross-origin-resource-policy'] ? 'sidecar' : 'next' })
  })
  await page.goto(`${gateway}/`, { waitUntil: 'load' })
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight))
  await page.waitForFunction(() => [...document.images].every((img) => img.complete && img.naturalWidth > 0), undefined, { timeout: 60_000 })
  await context.close()
  return seen
}

test('through the gateway, images are served by the sidecar on the page’s own origin', async () => {
  const images = await imagesThroughGateway()
  assert.ok(images.length >= 5)
  for (const img of images) {
    assert.ok(img.url.startsWith(`${gateway}/_next/image?`))
    assert.equal(img.status, 200)
    assert.equal(img.type, 'image/webp')
    assert.equal(img.servedBy, 'sidecar', img.url)
  }
})

test('with the sidecar killed, the same page’s images load from the frontend’s own optimizer', async () => {
  await stopSidecar()
  const images = await imagesThroughGateway()
  assert.ok(images.length >= 5)
  for (const img of images) {
    assert.equal(img.status, 200)
    assert.equal(img.type, 'image/webp')
    assert.equal(img.servedBy, 'next', img.url)
  }
})
