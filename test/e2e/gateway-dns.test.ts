/**
 * deploy/nginx.conf as shipped, with Debian's real nginx, resolving the compose service names through a
 * DNS server of the test's own (standing in for Docker's 127.0.0.11): the gateway starts and serves while
 * the sidecar's name does not resolve (images from the frontend's optimizer), follows the sidecar when its
 * name moves to another address, and routes trailingSlash apps' `/_next/image/` to it.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, REPO } from '../helpers/next-app.js'
import { testSidecar } from '../helpers/sidecar.js'
import { corpusFile } from '../helpers/upstream-server.js'
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js'
import { waitUntil } from '../helpers/wait.js'

const NGINX = process.env.NGINX_PATH ?? '/usr/sbin/nginx'
const PNG = corpusFile('png/chelsea.png')

let dns: DnsServer
let frontend: Server
let frontendPort: number
let sidecarPort: number
let gateway: string
const dir = mkdtempSync(join(tmpdir(), 'nis-nginx-dns-'))
const running: Array<() => Promise<void>> = []

/** The frontend: answers everything itself, its own optimizer included, and says so. */
function startFrontend(port: number): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/chelsea.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(PNG)
    res.writeHead(200, { 'content-type': 'text/plain', 'x-served-by': 'frontend' }).end(`frontend ${req.url}`)
  })
  server.listen(port, '127.0.0.1')
  return once(server, 'listening').then(() => server)
}

/** A real sidecar on `host`:sidecarPort (127.0.0.1 or 127.0.0.2: the container before and after it moved). */
async function startSidecarOn(host: string): Promise<() => Promise<void>> {
  const sidecar = testSidecar({ frontend: `http://127.0.0.1:${frontendPort}` })
  const server = await sidecar.listen(sidecarPort, host)
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    server.close()
    server.closeAllConnections()
    await sidecar.close()
  }
  running.push(stop)
  return stop
}

/** Who answered an image request through the gateway: helmet's CORP header is on every sidecar response only. */
async function imageThroughGateway(path = '/_next/image?url=%2Fchelsea.png&w=64&q=75'): Promise<{ status: number; servedBy: string }> {
  const res = await fetch(`${gateway}${path}`, { headers: { accept: 'image/webp' }, redirect: 'manual' })
  await res.arrayBuffer()
  const servedBy = res.headers.get('cross-origin-resource-policy') ? 'sidecar' : res.headers.get('x-served-by') ?? 'nginx'
  return { status: res.status, servedBy }
}

before(async () => {
  dns = await startDnsServer()
  frontendPort = await freePort()
  sidecarPort = await freePort()
  frontend = await startFrontend(frontendPort)
  dns.records.set('frontend', '127.0.0.1')
  // The sidecar's container is not running yet: its name does not resolve.

  const gatewayPort = await freePort()
  const shipped = readFileSync(join(REPO, 'deploy/nginx.conf'), 'utf8')
  const conf = shipped
    .replace(/resolver 127\.0\.0\.11\b/, `resolver 127.0.0.1:${dns.port}`)
    .replaceAll('frontend:3000', `frontend:${frontendPort}`)
    .replaceAll('sidecar:3001', `sidecar:${sidecarPort}`)
    .replace('listen 8080', `listen 127.0.0.1:${gatewayPort}`)
    .replace('pid /tmp/nginx-next-image-gateway.pid', `pid ${dir}/nginx.pid`)
    .replaceAll('/tmp/nginx-', `${dir}/`)
  writeFileSync(join(dir, 'nginx.conf'), conf)
  nginx = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  nginx.stderr!.on('data', (chunk: Buffer) => (nginxErrors += chunk))
  gateway = `http://127.0.0.1:${gatewayPort}`
  await waitUntil(async () => {
    if (nginx.exitCode !== null) throw new Error(`nginx exited with ${nginx.exitCode}: ${nginxErrors}`)
    return (await fetch(`${gateway}/`).catch(() => undefined)) !== undefined
  }, 'nginx to listen', 10_000, 50)
})

let nginx: ChildProcess
let nginxErrors = ''

after(async () => {
  nginx?.kill('SIGTERM')
  for (const stop of running) await stop().catch(() => {})
  frontend?.close()
  await dns?.close()
  rmSync(dir, { recursive: true, force: true })
})

test('with the sidecar absent when nginx starts, the site is served and images fall back to the frontend', async () => {
  const page = await fetch(`${gateway}/gallery`)
  assert.equal(page.status, 200)
  assert.equal(await page.text(), 'frontend /gallery')
  assert.deepEqual(await imageThroughGateway(), { status: 200, servedBy: 'frontend' })
  // nginx did ask for the name, at request time.
  assert.ok(dns.queries.some((q) => q.name === 'sidecar'))
})

test('once the sidecar starts, image requests reach it without restarting nginx', async () => {
  await startSidecarOn('127.0.0.1')
  dns.records.set('sidecar', '127.0.0.1')
  // nginx keeps an answer (here a "not found") for the resolver's `valid=` time, then asks again.
  await waitUntil(async () => (await imageThroughGateway()).servedBy === 'sidecar', 'images served by the sidecar', 30_000, 200)
  assert.deepEqual(await imageThroughGateway(), { status: 200, servedBy: 'sidecar' })
})

test('trailingSlash apps: /_next/image/ goes to the sidecar too', async () => {
  const res = await imageThroughGateway('/_next/image/?url=%2Fchelsea.png&w=64&q=75')
  assert.equal(res.servedBy, 'sidecar')
})

test('a sidecar recreated at a new address is followed: its name is looked up again', async () => {
  const stopFirst = running[running.length - 1]!
  await stopFirst()
  await startSidecarOn('127.0.0.2')
  dns.records.set('sidecar', '127.0.0.2')
  // Meanwhile requests fall back to the frontend (the old address refuses connections), never fail.
  await waitUntil(async () => {
    const res = await imageThroughGateway()
    assert.equal(res.status, 200)
    return res.servedBy === 'sidecar'
  }, 'images served by the moved sidecar', 30_000, 200)
})
