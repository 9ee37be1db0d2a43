/**
 * The security advisories Next.js fixed in its image optimizer, replayed against both of the sidecar's
 * endpoints that read a source: the optimizer (`/_next/image`) and the placeholder
 * (`/_sidecar/placeholder`). When Next publishes the next advisory, its replay goes in this file.
 *
 * - Huge bodies, remote and local (GHSA-9g9p-9gw9-jx7f / CVE-2025-59471, CVE-2026-44577): endless, 2 GB
 *   declared, a 1 MB gzip bomb of 1 GiB, four of each kind at once (two per endpoint), all 24 together.
 * - SVG CPU and memory exhaustion (CVE-2026-64644's class): a 5.6 MB SVG of 200,000 elements with
 *   dangerouslyAllowSVG on; Next 16.5 serves an allowed SVG as it is and never hands it to librsvg.
 * - DNS rebinding between the private-IP check and the connection.
 * - SVG polyglots with dangerouslyAllowSVG off (and on): what passes a first-bytes check of another
 *   type, or hides the SVG behind a preamble.
 *
 * Where memory is the point (bodies, SVG), the real command runs in a pod-sized cgroup (v1 memory + cpu,
 * as root; created and removed here) and the group's peak and OOM kills are read from the kernel.
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createGzip, gzipSync } from 'node:zlib'
import request from 'supertest'
import sharp from 'sharp'
import { cgroupsAvailable, PodCgroup } from '../helpers/cgroup.js'
import { freePort, REPO } from '../helpers/next-app.js'
import { testSidecar } from '../helpers/sidecar.js'
import { waitUntil } from '../helpers/wait.js'
import { configureSharp } from '../../sidecar/image/transform.js'
import { resolveNextConfig } from '../../sidecar/next/images-config.js'
import type { Sidecar } from '../../sidecar/server/app.js'

const MiB = 1024 ** 2
const NOT_AN_IMAGE = "The requested resource isn't a valid image."
const TYPE_NOT_ALLOWED = '"url" parameter is valid but image type is not allowed'

/** A small SVG document whose own size (77×33) must never be what a non-SVG answers. */
const SVG_DOC = '<svg xmlns="http://www.w3.org/2000/svg" width="77" height="33"><rect width="77" height="33" fill="red"/></svg>'
const svgAfter = (prefix: string) => Buffer.concat([Buffer.from(prefix, 'latin1'), Buffer.from(SVG_DOC)])

/** The polyglots: SVG documents Next's first-bytes checks take for another type, or find behind a preamble. */
const POLYGLOTS: Record<string, { body: Buffer; isSvg: boolean }> = {
  '<!--ftypavif--> (an ftyp brand in a comment)': { body: svgAfter('<!--ftypavif-->'), isSvg: true },
  'a UTF-8 BOM': { body: svgAfter('\xef\xbb\xbf'), isSvg: true },
  'a doctype': { body: svgAfter('<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'), isSvg: true },
  'leading whitespace': { body: svgAfter(' \n\t\n'), isSvg: true },
  'svgz (gzipped)': { body: gzipSync(Buffer.from(SVG_DOC)), isSvg: false },
  'a GIF8 prefix': { body: svgAfter('GIF8'), isSvg: false },
  'a GIF89a prefix': { body: svgAfter('GIF89a'), isSvg: false },
  'a RIFF····WEBP prefix': { body: svgAfter('RIFF    WEBP'), isSvg: false },
  'a RIFF\\0\\0\\0\\0WEBP prefix': { body: svgAfter('RIFF\0\0\0\0WEBP'), isSvg: false },
  'a BM prefix': { body: svgAfter('BM'), isSvg: false },
  'an icns prefix': { body: svgAfter('icns'), isSvg: false },
  'a TIFF II*\\0 prefix': { body: svgAfter('II*\0'), isSvg: false },
  'an ICO prefix': { body: svgAfter('\0\0\x01\0'), isSvg: false },
}

/** A 5.6 MB SVG of 200,000 elements: cheap to size from its root element, seconds and hundreds of MB for librsvg. */
const HUGE_SVG = Buffer.from(['<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="800">', '<rect width="2" height="2"/>'.repeat(200_000), '</svg>'].join(''))

/**
 * What Next 16.5's own `imageOptimizerTransform` does with each body, run in a child process: Next's
 * `getSharp` unblocks libvips' SVG loader process-wide, which must not leak into this process.
 */
function nextTransform(bodies: Record<string, Buffer>, dangerouslyAllowSVG: boolean): Record<string, { status: number; contentType?: string; original?: boolean }> {
  const script = `
    const { imageOptimizerTransform } = require(${JSON.stringify(join(REPO, 'node_modules/next/dist/server/image-optimizer/transform.js'))})
    const bodies = JSON.parse(require('fs').readFileSync(0, 'utf8'))
    ;(async () => {
      const out = {}
      for (const [name, base64] of Object.entries(bodies)) {
        const buffer = Buffer.from(base64, 'base64')
        try {
          const r = await imageOptimizerTransform({ buffer, etag: 'e', cacheControl: null }, { href: '/a', width: 64, quality: 75, mimeType: 'image/webp' }, { dangerouslyAllowSVG: ${dangerouslyAllowSVG} })
          out[name] = { status: 200, contentType: r.contentType, original: r.buffer.equals(buffer) }
        } catch (e) { out[name] = { status: e.statusCode } }
      }
      process.stdout.write(JSON.stringify(out))
    })()`
  const input = JSON.stringify(Object.fromEntries(Object.entries(bodies).map(([k, v]) => [k, v.toString('base64')])))
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { input, encoding: 'utf8' }))
}

/** An upstream of hostile bodies; `/<kind>/<n>` answers the same body for any n (distinct cache keys). */
async function startHostileUpstream(svg: Buffer, bomb: Buffer): Promise<{ server: Server; url: string; port: number }> {
  const pngHeader = readFileSync(join(REPO, '../shared/corpus/png/chelsea.png')).subarray(0, 64)
  const chunk = Buffer.alloc(64 * 1024, 1)
  const server = createServer((req, res) => {
    const path = `/${new URL(req.url ?? '/', 'http://x').pathname.split('/')[1]}`
    const flood = () => {
      // Writes as fast as the reader takes it, until the reader hangs up.
      const write = () => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', write)
      }
      res.write(pngHeader)
      write()
    }
    if (path === '/endless') {
      res.writeHead(200, { 'content-type': 'image/png' })
      flood()
    } else if (path === '/declared') {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(2_000_000_000) })
      flood()
    } else if (path === '/gzip-bomb') {
      res.writeHead(200, { 'content-type': 'image/png', 'content-encoding': 'gzip', 'content-length': String(bomb.byteLength) })
      res.end(bomb)
    } else if (path === '/huge.svg') {
      res.writeHead(200, { 'content-type': 'image/svg+xml', 'content-length': String(svg.byteLength) })
      res.end(svg)
    } else {
      res.writeHead(404).end()
    }
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return { server, url: `http://127.0.0.1:${port}`, port }
}

/** 1 GiB of zeros after a PNG signature, gzipped to about 1 MB (streamed: never 1 GiB in this process). */
async function gzipBomb(): Promise<Buffer> {
  const gzip = createGzip({ level: 9 })
  const out: Buffer[] = []
  gzip.on('data', (b: Buffer) => out.push(b))
  const ended = once(gzip, 'end')
  gzip.write(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))
  const zeros = Buffer.alloc(MiB)
  for (let i = 0; i < 1024; i++) if (!gzip.write(zeros)) await once(gzip, 'drain')
  gzip.end()
  await ended
  return Buffer.concat(out)
}

/** CPU seconds a process has used so far (user + system, all its threads: libvips' included). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

test("libvips' SVG loader is out of reach of every sharp call the sidecar makes", async () => {
  configureSharp(resolveNextConfig({}).sharp)
  await assert.rejects(sharp(Buffer.from(SVG_DOC)).metadata(), /unsupported image format|not in a known format|blocked/i)
  // The bytes of a polyglot that once reached librsvg through the placeholder's size read.
  await assert.rejects(sharp(svgAfter('BM')).metadata(), (err: Error) => !/XML|svg/i.test(err.message))
})

for (const dangerouslyAllowSVG of [false, true]) {
  describe(`SVG polyglots with dangerouslyAllowSVG ${dangerouslyAllowSVG ? 'on' : 'off'}`, () => {
    let s: Sidecar
    let upstream: Server
    let next: ReturnType<typeof nextTransform>
    before(async () => {
      upstream = createServer((req, res) => {
        const body = POLYGLOTS[decodeURIComponent(req.url!.slice(1))]?.body
        res.writeHead(body ? 200 : 404, { 'content-type': 'image/png' }).end(body)
      })
      upstream.listen(0, '127.0.0.1')
      await once(upstream, 'listening')
      s = testSidecar({ frontend: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`, nextConfig: { images: { dangerouslyAllowSVG } } })
      next = nextTransform(Object.fromEntries(Object.entries(POLYGLOTS).map(([k, v]) => [k, v.body])), dangerouslyAllowSVG)
    })
    after(async () => {
      await s.close()
      upstream.close()
    })
    const source = (name: string) => encodeURIComponent(`/${encodeURIComponent(name)}`)

    for (const [name, { body, isSvg }] of Object.entries(POLYGLOTS)) {
      test(`${name}: /_next/image answers as Next 16.5's transform does, never an SVG unless allowed`, async () => {
        const res = await request(s.app).get(`/_next/image?url=${source(name)}&w=64&q=75`).set('Accept', 'image/webp').buffer(true)
        const oracle = next[name]!
        assert.equal(res.status, oracle.status, String(res.text ?? ''))
        if (res.status === 200) {
          assert.equal(res.headers['content-type'], oracle.contentType)
          assert.equal(Buffer.compare(res.body as Buffer, body) === 0, oracle.original)
          assert.match(res.headers['content-security-policy'] ?? '', /sandbox/)
        }
        if (!dangerouslyAllowSVG) assert.notEqual(res.headers['content-type'], 'image/svg+xml')
      })

      test(`${name}: /_sidecar/placeholder ${isSvg && dangerouslyAllowSVG ? "answers the SVG's own size" : 'refuses it'}`, async () => {
        const res = await request(s.app).get(`/_sidecar/placeholder?url=${source(name)}`)
        if (isSvg && dangerouslyAllowSVG) {
          assert.equal(res.status, 200, res.text)
          assert.deepEqual([res.body.width, res.body.height, res.body.blurDataURL], [77, 33, undefined])
        } else {
          assert.deepEqual([res.status, res.text], [400, isSvg ? TYPE_NOT_ALLOWED : NOT_AN_IMAGE])
        }
      })
    }
  })
}

test('DNS rebinding: both endpoints connect only to the address they checked', { timeout: 60_000 }, () => {
  const script = join(REPO, 'test/helpers/rebind-in-netns.ts')
  const out = execFileSync('unshare', ['-n', 'sh', '-c', `ip link set lo up && ip addr add 1.2.3.4/32 dev lo && exec "${process.execPath}" --import tsx "${script}"`], {
    cwd: REPO,
    encoding: 'utf8',
    env: { ...process.env, LOG_LEVEL: 'silent' },
    // Synchronous: the event loop is blocked, so the test's own timeout cannot fire; this one can.
    timeout: 60_000,
    killSignal: 'SIGKILL',
  })
  const seen = JSON.parse(out.trim().split('\n').pop()!)
  assert.deepEqual(seen.image, { status: 200, type: 'image/webp' })
  assert.deepEqual(seen.placeholder, { status: 200, width: 451, height: 300 })
  // One lookup per fetch: the rebinding second answer was never asked for, so never connected to.
  assert.deepEqual(seen.lookups, { 'image.rebind.test': 1, 'placeholder.rebind.test': 1 })
  assert.equal(seen.upstreamRequests, 2)
})

describe('in a pod-sized cgroup (512 MiB, 1 CPU)', { skip: !cgroupsAvailable() && 'needs root and a writable cgroup v1 hierarchy' }, () => {
  let group: PodCgroup
  let child: ChildProcess
  let sidecar: string
  let hostile: Awaited<ReturnType<typeof startHostileUpstream>>
  before(async () => {
    hostile = await startHostileUpstream(HUGE_SVG, await gzipBomb())
    const dir = mkdtempSync(join(tmpdir(), 'nis-advisories-'))
    const config = join(dir, 'next.config.mjs')
    const images = { dangerouslyAllowSVG: true, dangerouslyAllowLocalIP: true, remotePatterns: [{ protocol: 'http', hostname: '127.0.0.1', port: String(hostile.port) }] }
    writeFileSync(config, `export default ${JSON.stringify({ images })}\n`)
    group = PodCgroup.create(512 * MiB, 1)
    const port = await freePort()
    // The command from source (tsx), so the replay checks the tree under test, not a stale build.
    child = group.spawn(process.execPath, ['--import', 'tsx', join(REPO, 'sidecar/cli/main.ts'), '--host', '127.0.0.1', '--port', String(port), '--frontend', hostile.url, '--config', config, '--next-version', '16', '--cache', 'memory://'], {
      cwd: REPO,
      env: { ...process.env, LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'ignore', 'inherit'],
    })
    sidecar = `http://127.0.0.1:${port}`
    await waitUntil(async () => {
      if (child.exitCode !== null) throw new Error(`the sidecar exited with ${child.exitCode}`)
      return fetch(`${sidecar}/healthz`).then((r) => r.ok, () => false)
    }, 'the sidecar in the cgroup to answer', 60_000, 50)
  })
  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    }
    await group?.remove()
    hostile?.server.close()
    hostile?.server.closeAllConnections()
  })

  const ask = async (path: string) => {
    const res = await fetch(`${sidecar}${path}`, { headers: { accept: 'image/webp' }, signal: AbortSignal.timeout(30_000) })
    return { status: res.status, type: res.headers.get('content-type'), body: Buffer.from(await res.arrayBuffer()) }
  }

  test('huge bodies, remote and local, on both endpoints, 24 at once: each 413 (never the timeout), in bounded memory', { timeout: 120_000 }, async () => {
    group.resetPeak()
    const started = performance.now()
    const cases = ['/endless', '/declared', '/gzip-bomb'].flatMap((path) =>
      [false, true].flatMap((remote) =>
        ['image', 'placeholder'].flatMap((endpoint) =>
          Array.from({ length: 2 }, (_, i) => {
            const url = encodeURIComponent(`${remote ? hostile.url : ''}${path}/${i}`)
            return { name: `${endpoint} ${remote ? 'remote' : 'local'} ${path}`, remote, path: endpoint === 'image' ? `/_next/image?url=${url}&w=64&q=75` : `/_sidecar/placeholder?url=${url}` }
          }),
        ),
      ),
    )
    const answers = await Promise.all(cases.map(async (c) => ({ ...c, ...(await ask(c.path)) })))
    const seconds = (performance.now() - started) / 1000
    for (const a of answers) {
      assert.equal(a.status, 413, `${a.name}: ${a.status} ${a.body.toString().slice(0, 100)}`)
      assert.equal(a.body.toString(), `"url" parameter is valid but ${a.remote ? 'upstream' : 'internal'} response is invalid`, a.name)
    }
    const peak = group.peakBytes
    process.stderr.write(`advisories: ${answers.length} hostile bodies → 413 in ${seconds.toFixed(1)} s, cgroup peak ${Math.round(peak / MiB)} MiB\n`)
    assert.equal(group.oomKills, 0)
    // Each ends at maximumResponseBody, long before the 7 s upstream timeout; together they share one CPU.
    assert.ok(seconds < 45, `${seconds.toFixed(1)} s`)
    assert.ok(peak < 400 * MiB, `peak ${Math.round(peak / MiB)} MiB`)
  })

  test('a 5.6 MB SVG of 200,000 elements, four at once on both endpoints: sized from its root element, served as it is, librsvg never runs', { timeout: 120_000 }, async () => {
    group.resetPeak()
    const cpuBefore = cpuSeconds(child.pid!)
    const placeholders = await Promise.all(Array.from({ length: 4 }, (_, i) => ask(`/_sidecar/placeholder?url=${encodeURIComponent(`/huge.svg/${i}`)}`)))
    const images = await Promise.all(Array.from({ length: 4 }, (_, i) => ask(`/_next/image?url=${encodeURIComponent(`${hostile.url}/huge.svg/${i}`)}&w=640&q=75`)))
    const cpu = cpuSeconds(child.pid!) - cpuBefore
    const peak = group.peakBytes
    process.stderr.write(`advisories: 8 requests for a 5.6 MB SVG: ${cpu.toFixed(2)} s of CPU, cgroup peak ${Math.round(peak / MiB)} MiB\n`)
    assert.equal(group.oomKills, 0, `OOM-killed (peak ${Math.round(peak / MiB)} MiB)`)
    for (const p of placeholders) {
      assert.equal(p.status, 200, p.body.toString().slice(0, 200))
      const data = JSON.parse(p.body.toString())
      assert.deepEqual([data.width, data.height, data.blurDataURL], [1000, 800, undefined])
    }
    for (const i of images) assert.deepEqual([i.status, i.type, i.body.byteLength], [200, 'image/svg+xml', HUGE_SVG.byteLength])
    // librsvg spent 1.6 s of CPU per request here on this document; image-size takes milliseconds.
    assert.ok(cpu < 1.5, `${cpu.toFixed(2)} s of CPU`)
    assert.ok(peak < 400 * MiB, `peak ${Math.round(peak / MiB)} MiB`)
  })
})
