/**
 * The hit path (server/hit-path.ts) answers a fresh hot-tier HIT ahead of Express. Its responses must
 * be the full path's, byte for byte: each case here is requested through `serveHit` (as `listen` does)
 * and through the Express app alone, on one sidecar, and the two answers are compared header by header
 * (names, values, order; only Date aside) and byte by byte. Everything else must go the full way.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { corpusFile, startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import { image } from '../helpers/image-url.js'
import { metric } from '../helpers/metrics.js'
import { waitUntil } from '../helpers/wait.js'
import { PrivateRedis } from '../helpers/redis.js'
import { createClient } from '@redis/client'
import type { Sidecar } from '../../sidecar/server/app.js'
import { signImageParams } from '../../sidecar/server/signature.js'

interface Answer {
  status: number
  headers: Array<[string, string]>
  body: Buffer
}

function raw(origin: string, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${origin}${path}`, { method, headers, agent: false }, (res: IncomingMessage) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const pairs: Array<[string, string]> = []
        for (let i = 0; i < res.rawHeaders.length; i += 2) pairs.push([res.rawHeaders[i]!, res.rawHeaders[i + 1]!])
        resolve({ status: res.statusCode!, headers: pairs, body: Buffer.concat(chunks) })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

async function serve(listener: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; url: string }> {
  const server = createServer(listener).listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

/** One sidecar behind two servers: `fast` asks serveHit first (as listen does), `full` is the Express app alone. */
async function twoWays(s: Sidecar) {
  const served: boolean[] = []
  const fast = await serve((req, res) => {
    const hit = s.serveHit(req, res)
    served.push(hit)
    if (!hit) s.app(req, res)
  })
  const full = await serve(s.app)
  return {
    fast: fast.url,
    full: full.url,
    /** Whether the fast path answered the last request through `fast`. */
    lastServed: () => served.at(-1),
    close: () => {
      for (const { server } of [fast, full]) {
        server.close()
        server.closeAllConnections()
      }
    },
  }
}

const withoutDate = (a: Answer) => a.headers.filter(([name]) => name.toLowerCase() !== 'date')

function assertSame(fast: Answer, full: Answer, what: string) {
  assert.equal(fast.status, full.status, `${what}: status`)
  assert.deepEqual(withoutDate(fast), withoutDate(full), `${what}: headers`)
  assert.ok(fast.body.equals(full.body), `${what}: body`)
}

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(() => upstream.close())

describe('a HIT through the fast path is the full path’s response, byte for byte', () => {
  let s: Sidecar
  let ways: Awaited<ReturnType<typeof twoWays>>
  before(async () => {
    s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port, { dangerouslyAllowSVG: true, contentDispositionType: 'inline', contentSecurityPolicy: "default-src 'self'; script-src 'none'; sandbox;" }) })
    ways = await twoWays(s)
  })
  after(async () => {
    ways.close()
    await s.close()
  })

  const cases: Array<[string, string, Record<string, string>]> = [
    ['WebP, the caller’s X-Request-Id', image('/corpus/photo-jpeg/rocket.jpg', 640), { accept: 'image/avif,image/webp,*/*', 'x-request-id': 'same-id-1' }],
    ['AVIF refused, PNG kept', image('/corpus/png/chelsea.png', 256), { accept: 'image/png', 'x-request-id': 'same-id-2' }],
    ['an absolute URL', image('http://127.0.0.1:PORT/corpus/photo-jpeg/garden.jpg', 384), { accept: 'image/webp', 'x-request-id': 'same-id-3' }],
    ['gzip accepted, WebP (not compressible)', image('/corpus/png/coffee.png', 128), { accept: 'image/webp', 'accept-encoding': 'gzip, br', 'x-request-id': 'same-id-4' }],
  ]
  for (const [what, template, headers] of cases) {
    test(what, async () => {
      const path = template.replace('PORT', String(upstream.port))
      const miss = await raw(ways.full, path, headers)
      assert.equal(miss.status, 200)
      const full = await raw(ways.full, path, headers)
      const fast = await raw(ways.fast, path, headers)
      assert.equal(ways.lastServed(), true, 'the fast path answered')
      assert.equal(fast.headers.find(([n]) => n === 'X-Nextjs-Cache')?.[1], 'HIT')
      assertSame(fast, full, what)
      // Conditional: a matching If-None-Match is a 304 with the same headers.
      const etag = full.headers.find(([n]) => n === 'ETag')![1]
      const fast304 = await raw(ways.fast, path, { ...headers, 'if-none-match': etag })
      assert.equal(ways.lastServed(), true)
      const full304 = await raw(ways.full, path, { ...headers, 'if-none-match': etag })
      assert.equal(fast304.status, 304)
      assertSame(fast304, full304, `${what} (304)`)
      // A stale If-None-Match is a 200.
      const other = await raw(ways.fast, path, { ...headers, 'if-none-match': '"other"' })
      assertSame(other, full, `${what} (other ETag)`)
    })
  }

  test('a generated X-Request-Id is a fresh UUID in the same place', async () => {
    const path = image('/corpus/photo-jpeg/rocket.jpg', 640)
    await raw(ways.full, path, { accept: 'image/webp' })
    const full = await raw(ways.full, path, { accept: 'image/webp' })
    const fast = await raw(ways.fast, path, { accept: 'image/webp' })
    assert.equal(ways.lastServed(), true)
    const id = (a: Answer) => a.headers.find(([n]) => n === 'X-Request-Id')![1]
    assert.match(id(fast), /^[0-9a-f-]{36}$/)
    assert.notEqual(id(fast), id(full))
    const masked = (a: Answer) => ({ ...a, headers: a.headers.map(([n, v]): [string, string] => [n, n === 'X-Request-Id' ? 'id' : v]) })
    assertSame(masked(fast), masked(full), 'generated id')
    // An unsafe one is replaced, as on the full path.
    const unsafe = await raw(ways.fast, path, { accept: 'image/webp', 'x-request-id': 'a b<script>' })
    assert.match(id(unsafe), /^[0-9a-f-]{36}$/)
  })

  test('compressible types (SVG, ICO) go the full way: gzip and Vary: Accept-Encoding as before', async () => {
    for (const [path, accept] of [[image('/corpus/svg/debian-logo.svg', 256), 'image/webp'], [image('/corpus/ico-bmp/debian-emblem.ico', 64), 'image/webp']] as const) {
      const headers = { accept, 'accept-encoding': 'gzip', 'x-request-id': 'svg-ico' }
      await raw(ways.full, path, headers)
      const full = await raw(ways.full, path, headers)
      const fast = await raw(ways.fast, path, headers)
      assert.equal(ways.lastServed(), false, `${path} went the full way`)
      assert.equal(fast.headers.find(([n]) => n.toLowerCase() === 'content-encoding')?.[1], 'gzip')
      assertSame(fast, full, path)
    }
  })

  test('misses, errors, HEAD, POST, another path and a trailing slash go the full way, answered as before', async () => {
    const fresh = image('/corpus/png/coins-gray.png', 96)
    const first = await raw(ways.fast, fresh, { accept: 'image/webp', 'x-request-id': 'm' })
    assert.equal(ways.lastServed(), false)
    assert.equal(first.headers.find(([n]) => n === 'X-Nextjs-Cache')![1], 'MISS')
    const headers = { accept: 'image/webp', 'x-request-id': 'same' }
    for (const [method, path] of [
      ['HEAD', fresh],
      ['POST', fresh],
      ['GET', image('/corpus/png/coins-gray.png', 97)],
      ['GET', '/_next/image?url=%2Fcorpus%2Fpng%2Fcoins-gray.png&w=96'],
      ['GET', `${fresh}&w=96`],
      ['GET', fresh.replace('/_next/image', '/_next/image/')],
      ['GET', fresh.replace('/_next/image', '/_NEXT/image')],
      ['GET', '/healthz'],
      ['GET', image('/status/500/x.png', 96)],
    ] as const) {
      const fast = await raw(ways.fast, path, headers, method)
      assert.equal(ways.lastServed(), false, `${method} ${path}`)
      const full = await raw(ways.full, path, headers, method)
      assertSame(fast, full, `${method} ${path}`)
    }
  })

  test('hits are counted and timed in /metrics like every request', async () => {
    const path = image('/corpus/photo-jpeg/rocket.jpg', 640)
    await raw(ways.full, path, { accept: 'image/webp' })
    const text = async () => (await raw(ways.full, '/metrics')).body.toString()
    const before = await text()
    for (let i = 0; i < 5; i++) await raw(ways.fast, path, { accept: 'image/webp' })
    const etag = (await raw(ways.fast, path, { accept: 'image/webp' })).headers.find(([n]) => n === 'ETag')![1]
    await raw(ways.fast, path, { accept: 'image/webp', 'if-none-match': etag })
    const after = await text()
    const delta = (name: string, labels: Record<string, string>) => metric(after, name, labels) - metric(before, name, labels)
    // Six hits, and the first scrape (timed as it closes, after its own text was made).
    assert.equal(delta('next_image_sidecar_request_duration_seconds_count', { status_class: '2xx' }), 6 + 1)
    assert.equal(delta('next_image_sidecar_request_duration_seconds_count', { status_class: '3xx' }), 1)
    assert.equal(delta('next_image_sidecar_cache_requests_total', { result: 'hit' }), 7)
  })
})

describe('the hit log line is opt-in (debug); misses and errors are always logged', () => {
  for (const level of ['info', 'debug'] as const) {
    test(`LOG_LEVEL=${level}`, async () => {
      const lines: Array<Record<string, unknown>> = []
      const logger = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line)) })
      const s = testSidecar({ frontend: upstream.url, logger })
      const ways = await twoWays(s)
      try {
        const path = image('/corpus/png/chelsea.png', 64)
        await raw(ways.fast, path, { accept: 'image/webp', 'x-request-id': 'miss-1' })
        await raw(ways.fast, path, { accept: 'image/webp', 'x-request-id': 'hit-1' })
        assert.equal(ways.lastServed(), true)
        await raw(ways.full, path, { accept: 'image/webp', 'x-request-id': 'hit-2' })
        await raw(ways.fast, image('/status/404/x.png', 64), { accept: 'image/webp', 'x-request-id': 'error-1' })
        const logged = (id: string) => lines.filter((l) => l.msg === 'request' && l.reqId === id)
        assert.equal(logged('miss-1').length, 1)
        assert.equal(logged('error-1').length, 1)
        assert.equal(logged('miss-1')[0]!.level, 30)
        for (const id of ['hit-1', 'hit-2']) {
          if (level === 'info') assert.equal(logged(id).length, 0, `${id} not logged at info`)
          else {
            assert.equal(logged(id).length, 1)
            assert.equal(logged(id)[0]!.level, 20)
            assert.equal(logged(id)[0]!.cache, 'HIT')
            assert.equal(logged(id)[0]!.status, 200)
            assert.equal(logged(id)[0]!.url, path)
            assert.equal(typeof logged(id)[0]!.bytes, 'number')
          }
        }
      } finally {
        ways.close()
        await s.close()
      }
    })
  }
})

test('signed URLs: a valid signature is served from the fast path, a wrong one is refused as before', async () => {
  const key = 'k'.repeat(32)
  const s = testSidecar({ frontend: upstream.url, signingKey: key })
  const ways = await twoWays(s)
  try {
    const url = '/corpus/png/chelsea.png'
    const signed = `${image(url, 64)}&s=${signImageParams(key, url, '64', '75')}`
    await raw(ways.full, signed, { accept: 'image/webp' })
    const full = await raw(ways.full, signed, { accept: 'image/webp', 'x-request-id': 'sig' })
    const fast = await raw(ways.fast, signed, { accept: 'image/webp', 'x-request-id': 'sig' })
    assert.equal(ways.lastServed(), true)
    assertSame(fast, full, 'signed')
    const wrong = `${image(url, 64)}&s=${signImageParams('other', url, '64', '75')}`
    const fastWrong = await raw(ways.fast, wrong, { accept: 'image/webp', 'x-request-id': 'sig' })
    assert.equal(ways.lastServed(), false)
    assert.equal(fastWrong.status, 403)
    assertSame(fastWrong, await raw(ways.full, wrong, { accept: 'image/webp', 'x-request-id': 'sig' }), 'wrong signature')
  } finally {
    ways.close()
    await s.close()
  }
})

test('draining: hits go the full way and close their connection', async () => {
  const s = testSidecar({ frontend: upstream.url })
  const ways = await twoWays(s)
  try {
    const path = image('/corpus/png/chelsea.png', 64)
    await raw(ways.fast, path, { accept: 'image/webp' })
    s.drain()
    const fast = await raw(ways.fast, path, { accept: 'image/webp', 'x-request-id': 'd' })
    assert.equal(ways.lastServed(), false)
    assert.equal(fast.headers.find(([n]) => n.toLowerCase() === 'connection')?.[1], 'close')
    assertSame(fast, await raw(ways.full, path, { accept: 'image/webp', 'x-request-id': 'd' }), 'draining')
  } finally {
    ways.close()
    await s.close()
  }
})

test('SQLite behind the hot tier: a hit is served from the hot tier; a stale entry goes the full way', async () => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-hit-')), 'cache.sqlite')}`
  const s = testSidecar({ frontend: upstream.url, cache })
  const ways = await twoWays(s)
  try {
    const fresh = image('/corpus/png/chelsea.png', 64)
    await raw(ways.fast, fresh, { accept: 'image/webp' })
    const full = await raw(ways.full, fresh, { accept: 'image/webp', 'x-request-id': 'q' })
    const fast = await raw(ways.fast, fresh, { accept: 'image/webp', 'x-request-id': 'q' })
    assert.equal(ways.lastServed(), true)
    assertSame(fast, full, 'sqlite hit')
    // max-age=0 from the upstream and no minimumCacheTTL: stale once the clock moves on, so STALE, never the fast path.
    upstream.mutable.set('stale', { status: 200, body: corpusFile('png/coffee.png'), headers: { 'content-type': 'image/png', 'cache-control': 'max-age=0' } })
    const noTtl = testSidecar({ frontend: upstream.url, nextConfig: { images: { minimumCacheTTL: 0 } } })
    const ways2 = await twoWays(noTtl)
    try {
      const stale = image('/mutable/stale', 64)
      await raw(ways2.fast, stale, { accept: 'image/webp' })
      const stored = Date.now()
      await waitUntil(() => Date.now() > stored + 1, 'the clock to move past the entry\'s expiry')
      const again = await raw(ways2.fast, stale, { accept: 'image/webp' })
      assert.equal(ways2.lastServed(), false)
      assert.equal(again.headers.find(([n]) => n === 'X-Nextjs-Cache')![1], 'STALE')
      await noTtl.idle()
    } finally {
      ways2.close()
      await noTtl.close()
    }
  } finally {
    ways.close()
    await s.close()
  }
})

test('SQLite without a hot tier (--hot-cache-size 0): a fresh hit is served by the fast path, the full path’s response byte for byte', async () => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-hit-')), 'cache.sqlite')}`
  const s = testSidecar({ frontend: upstream.url, cache, hotCacheSize: 0 })
  const ways = await twoWays(s)
  try {
    for (const [path, headers] of [[image('/corpus/png/chelsea.png', 64), { accept: 'image/webp' }], [image('/corpus/photo-jpeg/rocket.jpg', 128), { accept: 'image/avif,image/webp,*/*' }]] as const) {
      const miss = await raw(ways.fast, path, headers)
      assert.equal(miss.headers.find(([n]) => n === 'X-Nextjs-Cache')![1], 'MISS')
      assert.equal(ways.lastServed(), false)
      const full = await raw(ways.full, path, { ...headers, 'x-request-id': 'q' })
      for (let i = 0; i < 3; i++) {
        const fast = await raw(ways.fast, path, { ...headers, 'x-request-id': 'q' })
        assert.equal(ways.lastServed(), true, 'the fast path answered a hit from the SQLite store')
        assertSame(fast, full, 'sqlite hit, no hot tier')
      }
      const etag = full.headers.find(([n]) => n === 'ETag')![1]
      const fast304 = await raw(ways.fast, path, { ...headers, 'x-request-id': 'r', 'if-none-match': etag })
      assert.equal(ways.lastServed(), true)
      assertSame(fast304, await raw(ways.full, path, { ...headers, 'x-request-id': 'r', 'if-none-match': etag }), 'sqlite 304, no hot tier')
    }
  } finally {
    ways.close()
    await s.close()
  }
})

test('SQLite behind the hot tier: an entry only the file holds (another process wrote it) is served by the fast path, and kept hot', async () => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-hit-')), 'cache.sqlite')}`
  const writer = testSidecar({ frontend: upstream.url, cache })
  const s = testSidecar({ frontend: upstream.url, cache })
  const ways = await twoWays(s)
  const writerWays = await twoWays(writer)
  try {
    const path = image('/corpus/png/coffee.png', 96)
    const miss = await raw(writerWays.fast, path, { accept: 'image/webp', 'x-request-id': 'w' })
    assert.equal(miss.headers.find(([n]) => n === 'X-Nextjs-Cache')![1], 'MISS')
    const fast = await raw(ways.fast, path, { accept: 'image/webp', 'x-request-id': 'w' })
    assert.equal(ways.lastServed(), true, 'the fast path answered from the file')
    assert.equal(fast.headers.find(([n]) => n === 'X-Nextjs-Cache')![1], 'HIT')
    assert.deepEqual(fast.body, miss.body)
    assertSame(fast, await raw(ways.full, path, { accept: 'image/webp', 'x-request-id': 'w' }), 'a hit from the file')
    assert.ok((s.store as unknown as { hot: { size: number } }).hot.size > 0, 'the entry is kept in the hot tier')
  } finally {
    ways.close()
    writerWays.close()
    await s.close()
    await writer.close()
  }
})

/** Counts the requests that reach Express (the full path), whether `serveHit` returned false or handed them on. */
function expressCalls(s: Sidecar): () => number {
  const app = s.app as unknown as { handle: (...args: unknown[]) => unknown }
  const handle = app.handle
  let calls = 0
  app.handle = function (this: unknown, ...args: unknown[]) {
    calls++
    return handle.apply(this, args)
  }
  return () => calls
}

test('Redis without a hot tier: a fresh hit is read and answered ahead of Express, the full path’s response byte for byte; a miss is handed to it', async () => {
  const redis = await PrivateRedis.start()
  const s = testSidecar({ frontend: upstream.url, cache: redis.url, hotCacheSize: 0 })
  const ways = await twoWays(s)
  const express = expressCalls(s)
  try {
    const path = image('/corpus/png/chelsea.png', 64)
    const miss = await raw(ways.fast, path, { accept: 'image/webp', 'x-request-id': 'm' })
    assert.equal(miss.headers.find(([n]) => n === 'X-Nextjs-Cache')![1], 'MISS')
    assert.equal(express(), 1, 'a miss goes the full way')
    const full = await raw(ways.full, path, { accept: 'image/webp', 'x-request-id': 'q' })
    assert.equal(express(), 2)
    for (let i = 0; i < 3; i++) {
      const fast = await raw(ways.fast, path, { accept: 'image/webp', 'x-request-id': 'q' })
      assertSame(fast, full, 'redis hit, no hot tier')
    }
    const etag = full.headers.find(([n]) => n === 'ETag')![1]
    const before = (await raw(ways.full, '/metrics')).body.toString()
    const fast304 = await raw(ways.fast, path, { accept: 'image/webp', 'x-request-id': 'r', 'if-none-match': etag })
    assert.equal(express(), 3, 'hits and 304s from Redis do not reach Express (the scrape did)')
    const after = (await raw(ways.full, '/metrics')).body.toString()
    const delta = (name: string, labels: Record<string, string>) => metric(after, name, labels) - metric(before, name, labels)
    assert.equal(metric(after, 'next_image_sidecar_request_duration_seconds_count', { status_class: '3xx' }), 1, 'timed like every request')
    assert.equal(delta('next_image_sidecar_cache_requests_total', { result: 'hit' }), 1, 'counted as a hit')
    assertSame(fast304, await raw(ways.full, path, { accept: 'image/webp', 'x-request-id': 'r', 'if-none-match': etag }), 'redis 304, no hot tier')
  } finally {
    ways.close()
    await s.close()
    await redis.kill()
  }
})

test('Redis without a hot tier: a miss the fast path hands to the full path costs one read of the store, not two', async () => {
  const redis = await PrivateRedis.start()
  const s = testSidecar({ frontend: upstream.url, cache: redis.url, hotCacheSize: 0 })
  const ways = await twoWays(s)
  const express = expressCalls(s)
  const monitor = createClient({ url: redis.url })
  await monitor.connect()
  // The entry's reads (the purge log's counter and the single-flight lock are read with GET too).
  const commands: string[] = []
  await monitor.monitor((line) => commands.push(String(line)))
  const reads = () => commands.filter((c) => /"GET" "/i.test(c) && !c.includes('{purge}') && !c.includes(':lock:'))
  try {
    const miss = await raw(ways.fast, image('/corpus/png/coffee.png', 64), { accept: 'image/webp' })
    assert.equal(miss.headers.find(([n]) => n === 'X-Nextjs-Cache')![1], 'MISS')
    assert.equal(express(), 1, 'the miss went the full way')
    // MONITOR's lines arrive on their own connection: the entry's SET is the last command of the miss.
    await waitUntil(() => commands.some((c) => /"SET" "/i.test(c) && !c.includes('{purge}')), 'the entry to be stored')
    assert.equal(reads().length, 1, `the store was read again for the same request:\n${reads().join('\n')}`)
  } finally {
    monitor.destroy() // QUIT is never answered in MONITOR mode
    ways.close()
    await s.close()
    await redis.kill()
  }
})

test('Redis behind the hot tier: another replica’s entry is read ahead of Express and kept hot', async () => {
  const redis = await PrivateRedis.start()
  const writer = testSidecar({ frontend: upstream.url, cache: redis.url })
  const s = testSidecar({ frontend: upstream.url, cache: redis.url })
  const ways = await twoWays(s)
  const writerWays = await twoWays(writer)
  const express = expressCalls(s)
  try {
    const path = image('/corpus/png/coffee.png', 96)
    const miss = await raw(writerWays.fast, path, { accept: 'image/webp', 'x-request-id': 'w' })
    assert.equal(miss.headers.find(([n]) => n === 'X-Nextjs-Cache')![1], 'MISS')
    const fast = await raw(ways.fast, path, { accept: 'image/webp', 'x-request-id': 'w' })
    assert.equal(fast.headers.find(([n]) => n === 'X-Nextjs-Cache')![1], 'HIT')
    assert.deepEqual(fast.body, miss.body)
    assert.equal(express(), 0, 'the replica’s entry was answered ahead of Express')
    assert.ok((s.store as unknown as { hot: { size: number } }).hot.size > 0, 'the entry is kept in the hot tier')
    assertSame(fast, await raw(ways.full, path, { accept: 'image/webp', 'x-request-id': 'w' }), 'a hit from Redis')
  } finally {
    ways.close()
    writerWays.close()
    await s.close()
    await writer.close()
    await redis.kill()
  }
})
