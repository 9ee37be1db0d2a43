/**
 * Fuzzing the endpoint (bounded in count and time): generated and mutated query strings, headers
 * and upstream bodies. Nothing may crash the process, no answer may be a 5xx (the upstream here is
 * healthy, so every failure is the client's or the image's), and memory must stay flat.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import request from 'supertest'
import { corpusFile, startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import type { Sidecar } from '../../sidecar/server/app.js'

setFlagsFromString('--expose_gc')
const gc = runInNewContext('gc') as () => void

// A small deterministic PRNG, so a failure can be replayed with the same seed.
let seed = Number(process.env.FUZZ_SEED ?? 20261125)
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!

let upstream: UpstreamServer
let sidecar: Sidecar

const SOURCES = ['png/chelsea.png', 'photo-jpeg/rocket.jpg', 'gif-animated/no-time-for-that.gif', 'webp/debian-logo-alpha.webp', 'svg/debian-logo.svg', 'tiny/one-pixel.png', 'ico-bmp/debian-emblem.ico']

function mutate(body: Buffer): Buffer {
  const copy = Buffer.from(body)
  switch (Math.floor(random() * 4)) {
    case 0: // flip bytes
      for (let i = 0; i < 1 + random() * 20; i++) copy[Math.floor(random() * copy.length)] = Math.floor(random() * 256)
      return copy
    case 1: // truncate
      return copy.subarray(0, Math.floor(random() * copy.length))
    case 2: // keep the header, garbage after
      return Buffer.concat([copy.subarray(0, 64), Buffer.from(Array.from({ length: 512 }, () => Math.floor(random() * 256)))])
    default: // append garbage
      return Buffer.concat([copy, Buffer.alloc(Math.floor(random() * 4096), 0xff)])
  }
}

function fuzzValue(kind: 'url' | 'w' | 'q'): string {
  const common = ['', ' ', '%', '%%', '%zz', '%E0%A4%A', '\u0000', '😀', '-1', '1e3', '0x10', '[]', '{}', 'NaN', 'Infinity', 'a'.repeat(4000)]
  // Mostly plausible values, so that the deeper layers (fetch, decode, encode) are reached too.
  const valid = random() < 0.65
  if (kind === 'url' && valid) return pick([`/corpus/${pick(SOURCES)}`, `/mutable/fuzz-${Math.floor(random() * 40)}`, `${upstream.url}/mutable/fuzz-${Math.floor(random() * 40)}`])
  if (kind === 'w' && valid) return pick(['64', '128', '384', '640', '0064'])
  if (kind === 'q' && valid) return pick(['50', '75', '050'])
  if (kind === 'url') {
    return pick([
      ...common,
      `/corpus/${pick(SOURCES)}`,
      `/mutable/fuzz-${Math.floor(random() * 40)}`,
      `${upstream.url}/corpus/${pick(SOURCES)}`,
      `${upstream.url}/mutable/fuzz-${Math.floor(random() * 40)}`,
      '//evil.test/x.png',
      '/_next/image?url=/a.png',
      '/%5Fnext/image',
      'javascript:alert(1)',
      'data:image/png;base64,AAAA',
      'http://[::1',
      'http://127.0.0.2:1/x.png',
      `/corpus/${pick(SOURCES)}?v=${Math.floor(random() * 9)}`,
      '/../../etc/passwd',
      '/corpus/png/../png/chelsea.png',
    ])
  }
  return pick([...common, '64', '128', '384', '0064', '75', '50', '075', '100', '101', '0', String(Math.floor(random() * 5000))])
}

function fuzzQuery(): string {
  const parts: string[] = []
  for (const key of ['url', 'w', 'q'] as const) {
    const count = pick([0, 1, 1, 1, 1, 1, 1, 1, 1, 2])
    for (let i = 0; i < count; i++) parts.push(`${key}=${random() < 0.8 ? encodeURIComponent(fuzzValue(key)) : fuzzValue(key).replace(/[&#\s]/g, '')}`)
  }
  if (random() < 0.2) parts.push(`${pick(['x', 'url[]', 'W', 'dpl'])}=${encodeURIComponent(fuzzValue('q'))}`)
  return parts.sort(() => random() - 0.5).join('&')
}

function fuzzHeaders(): Record<string, string> {
  const headers: Record<string, string> = {}
  if (random() < 0.8) headers.accept = pick(['image/webp', 'image/avif,image/webp,*/*', '*/*', 'image/png', 'IMAGE/WEBP', 'image/webp;q=0', 'image/webp;x', ';;;', 'image/*;q=abc', ',,', 'text/html'])
  if (random() < 0.3) headers['if-none-match'] = pick(['*', 'W/"x"', '"abc"', 'abc', ''])
  if (random() < 0.3) headers['accept-encoding'] = pick(['gzip', 'br', 'identity', '*', 'gzip;q=0'])
  return headers
}

before(async () => {
  upstream = await startUpstream()
  for (let i = 0; i < 40; i++) upstream.mutable.set(`fuzz-${i}`, { status: 200, body: mutate(corpusFile(pick(SOURCES))) })
  sidecar = testSidecar({
    frontend: upstream.url,
    nextConfig: localRemoteConfig(upstream.port, { qualities: [50, 75], imageSizes: [64, 128, 384], dangerouslyAllowSVG: random() < 0.5 }),
    cacheMaxSize: 2_000_000,
    upstreamTimeoutMs: 2000,
  })
})
after(async () => {
  await sidecar.close()
  await upstream.close()
})

const REQUESTS = 2000
const BATCH = 50

/** Heap, off-heap (image Buffers live there, not in heapUsed) and resident memory, after a full GC. */
function memory() {
  gc()
  const { heapUsed, heapTotal, external, arrayBuffers, rss } = process.memoryUsage()
  // arrayBuffers is part of external; both are reported by Node, so take external as the off-heap total.
  // Native memory is RSS outside V8's heap: V8 keeps heap pages it has emptied committed (Node 24 kept
  // 100 MB more after this run with heapUsed flat), and those are no leak; a leak in JS shows in heapUsed.
  return { heapUsed, external: Math.max(external, arrayBuffers), rss, native: rss - heapTotal }
}

test(`${REQUESTS} generated requests: no crash, no 5xx, flat memory (heap, external, RSS)`, { timeout: 240_000 }, async () => {
  const statuses = new Map<number, number>()
  const failures: string[] = []
  let afterWarmUp = memory()
  let sent = 0
  for (let batch = 0; batch < REQUESTS / BATCH; batch++) {
    await Promise.all(
      Array.from({ length: BATCH }, async () => {
        const path = `/_next/image?${fuzzQuery()}`
        const method = pick(['GET', 'GET', 'GET', 'HEAD', 'POST'])
        let req = method === 'GET' ? request(sidecar.app).get(path) : method === 'HEAD' ? request(sidecar.app).head(path) : request(sidecar.app).post(path)
        for (const [k, v] of Object.entries(fuzzHeaders())) req = req.set(k, v)
        const res = await req
        sent++
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
        if (res.status >= 500) failures.push(`${res.status} ${method} ${path.slice(0, 200)} → ${String(res.text).slice(0, 100)}`)
      }),
    )
    // The first 250 requests fill the caches, pools and lazily loaded code; growth is measured after them.
    if (batch === 4) afterWarmUp = memory()
  }
  const end = memory()
  const mb = (bytes: number) => Math.round(bytes / 1024 ** 2)
  const growth = { heapUsed: end.heapUsed - afterWarmUp.heapUsed, external: end.external - afterWarmUp.external, rss: end.rss - afterWarmUp.rss, native: end.native - afterWarmUp.native }
  process.stderr.write(`fuzz: ${sent} requests; growth after warm-up: heap ${mb(growth.heapUsed)} MB, external ${mb(growth.external)} MB, RSS ${mb(growth.rss)} MB, of it outside V8's heap ${mb(growth.native)} MB\n`)
  assert.equal(sent, REQUESTS)
  assert.deepEqual(failures, [], `statuses: ${JSON.stringify([...statuses])}`)
  assert.ok(statuses.get(200)! > 50 && statuses.get(400)! > 50, `statuses: ${JSON.stringify([...statuses])}`)
  // The cache is a 2 MB memory store: beyond it, nothing the requests leave behind may accumulate.
  // (RSS outside V8's heap gets a wider margin: glibc keeps freed pages in its arenas, and V8's committed
  // heap moves by ±35 MB between runs; it catches native leaks of ~65 kB a request and more, while
  // heapUsed and external catch JS and Buffer leaks far below that.)
  assert.ok(growth.heapUsed < 30 * 1024 ** 2, `heap grew by ${mb(growth.heapUsed)} MB`)
  assert.ok(growth.external < 16 * 1024 ** 2, `external memory grew by ${mb(growth.external)} MB`)
  assert.ok(growth.native < 80 * 1024 ** 2, `RSS outside V8's heap grew by ${mb(growth.native)} MB`)
})
