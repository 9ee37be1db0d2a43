/**
 * The README's CDN recipe end to end, with Debian's varnish as the HTTP cache in front: a source is
 * replaced, `next-image-sidecar purge --target` removes it from the sidecar and prints the optimizer
 * URLs, and those URLs are purged from the cache in front (PURGE, then BAN in a second round). After
 * it, every variant through the cache in front and straight from the sidecar carries the new bytes.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { CLI, startCli, stopChild } from '../helpers/cli.js'
import { freePort } from '../helpers/next-app.js'
import { image } from '../helpers/image-url.js'
import { waitUntil } from '../helpers/wait.js'

const VARNISHD = '/usr/sbin/varnishd'
const TOKEN = 'varnish-test-admin-token-0123456789'
let upstream: UpstreamServer

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

/** The VCL of the README's recipe: PURGE drops a URL (every Accept variant), BAN a URL by regex. */
const vcl = (backendPort: number) => `vcl 4.1;
backend sidecar { .host = "127.0.0.1"; .port = "${backendPort}"; }
acl purgers { "127.0.0.1"; }
sub vcl_recv {
  if (req.method == "PURGE" || req.method == "BAN") {
    if (client.ip !~ purgers) { return (synth(405)); }
    if (req.method == "PURGE") { return (purge); }
    ban("req.url == " + req.url);
    return (synth(200, "Banned"));
  }
}
`

async function startVarnish(backendPort: number): Promise<{ url: string; child: ChildProcess }> {
  const dir = mkdtempSync(join(tmpdir(), 'nis-varnish-'))
  chmodSync(dir, 0o755)
  const vclPath = join(dir, 'default.vcl')
  writeFileSync(vclPath, vcl(backendPort))
  const port = await freePort()
  const child = spawn(VARNISHD, ['-F', '-a', `127.0.0.1:${port}`, '-f', vclPath, '-n', join(dir, 'work'), '-s', 'malloc,64m', '-T', 'none'], { stdio: ['ignore', 'ignore', 'inherit'] })
  const url = `http://127.0.0.1:${port}`
  await waitUntil(async () => {
    if (child.exitCode !== null) throw new Error(`varnishd exited with ${child.exitCode}`)
    return fetch(`${url}/healthz`).then((r) => r.ok, () => false)
  }, 'varnish to serve', 30_000, 100)
  return { url, child }
}

const variants = (src: string) => [640, 1080].flatMap((w) => ['image/avif', 'image/webp', 'image/jpeg'].map((accept) => ({ path: image(src, w), accept })))

async function get(base: string, path: string, accept: string) {
  const res = await fetch(`${base}${path}`, { headers: { accept } })
  assert.equal(res.status, 200, `${base}${path}`)
  return { body: Buffer.from(await res.arrayBuffer()), age: Number(res.headers.get('age') ?? 0), xvarnish: res.headers.get('x-varnish') ?? '' }
}

function purgeCli(target: string, src: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, 'purge', src, '--target', target], { env: { ...process.env, IMAGE_SIDECAR_ADMIN_TOKEN: TOKEN }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c) => (stdout += c))
  child.stderr.on('data', (c) => (stderr += c))
  return once(child, 'exit').then(([code]) => ({ code: code as number | null, stdout, stderr }))
}

test('a replaced source, purged from the sidecar and then from varnish by the listed URLs, is new everywhere', async () => {
  const opsPort = await freePort()
  const sidecar = await startCli(['--frontend', upstream.url, '--cache', 'memory://', '--metrics-port', String(opsPort), '--max-attempts', '1'], { IMAGE_SIDECAR_ADMIN_TOKEN: TOKEN })
  const varnish = await startVarnish(Number(new URL(sidecar.url).port))
  try {
    const src = '/mutable/vhero'
    const images = [corpusFile('photo-jpeg/rocket.jpg'), corpusFile('photo-jpeg/garden.jpg'), corpusFile('photo-jpeg/aqua.jpg')]
    upstream.mutable.set('vhero', { status: 200, body: images[0]!, headers: { 'content-type': 'image/jpeg' } })
    let previous = new Map<string, Buffer>()
    for (const { path, accept } of variants(src)) previous.set(`${accept} ${path}`, (await get(varnish.url, path, accept)).body)
    // Served from varnish's cache now (a hit names two transactions in X-Varnish).
    for (const { path, accept } of variants(src)) assert.match((await get(varnish.url, path, accept)).xvarnish, /^\d+ \d+$/, `${accept} ${path} is a varnish hit`)

    for (const [round, method] of [[1, 'PURGE'], [2, 'BAN']] as const) {
      upstream.mutable.set('vhero', { status: 200, body: images[round]!, headers: { 'content-type': 'image/jpeg' } })
      // Without the purge, both keep the old image: what users see today.
      const { path: p0, accept: a0 } = variants(src)[0]!
      assert.ok((await get(varnish.url, p0, a0)).body.equals(previous.get(`${a0} ${p0}`)!))

      const purged = await purgeCli(`http://127.0.0.1:${opsPort}`, src)
      assert.equal(purged.code, 0, purged.stderr)
      const urls = purged.stdout.trim().split('\n')
      assert.deepEqual(urls.sort(), [image(src, 1080), image(src, 640)])
      for (const url of urls) assert.equal((await fetch(`${varnish.url}${url}`, { method })).status, 200, `${method} ${url}`)

      const next = new Map<string, Buffer>()
      for (const { path, accept } of variants(src)) {
        const id = `${accept} ${path}`
        const front = await get(varnish.url, path, accept)
        const origin = await get(sidecar.url, path, accept)
        assert.ok(!front.body.equals(previous.get(id)!), `${method}: ${id} through varnish is the old image`)
        assert.ok(front.body.equals(origin.body), `${method}: ${id}: varnish and the sidecar differ`)
        next.set(id, front.body)
      }
      previous = next
    }
  } finally {
    await Promise.all([varnish.child, sidecar.child].map((c) => stopChild(c)))
  }
})
