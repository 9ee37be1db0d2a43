/** Every row of the spec's error table (next-image-spec.md §7b), over real HTTP. */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import request from 'supertest'
import { CORPUS, startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import type { Sidecar } from '../../sidecar/server/app.js'
import { signImageParams } from '../../sidecar/server/signature.js'
import { image } from '../helpers/image-url.js'

const UPSTREAM_INVALID = '"url" parameter is valid but upstream response is invalid'
const INTERNAL_INVALID = '"url" parameter is valid but internal response is invalid'

let upstream: UpstreamServer
let sidecar: Sidecar

/** A TCP port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  const { port } = server.address() as { port: number }
  await new Promise((r) => server.close(r))
  return port
}

/**
 * A TCP server on every loopback address (IPv4 and IPv6) that counts the connections it gets:
 * the target of the SSRF tests, so "refused before any connection" is observed where it would happen.
 */
async function connectionTrap(): Promise<{ port: number; connections: () => number; close: () => void }> {
  let connections = 0
  const server = createServer((socket) => (connections++, socket.destroy())).listen({ port: 0, host: '::', ipv6Only: false })
  await new Promise((r) => server.once('listening', r))
  const { port } = server.address() as { port: number }
  return { port, connections: () => connections, close: () => server.close() }
}

before(async () => {
  upstream = await startUpstream()
  sidecar = testSidecar({
    frontend: upstream.url,
    nextConfig: localRemoteConfig(upstream.port, { maximumResponseBody: 200_000 }),
    upstreamTimeoutMs: 500,
  })
})
after(async () => {
  await sidecar.close()
  await upstream.close()
})

async function expectError(path: string, status: number, body: string) {
  const res = await request(sidecar.app).get(path).buffer(true).parse((r, cb) => {
    let data = ''
    r.on('data', (c: Buffer) => (data += c.toString()))
    r.on('end', () => cb(null, data))
  })
  assert.equal(res.status, status)
  assert.equal(res.body, body)
  // Next sends ImageError bodies bare: no Content-Type, no Cache-Control, no Vary.
  assert.equal(res.headers['content-type'], undefined)
  assert.equal(res.headers['cache-control'], undefined)
  assert.equal(res.headers.vary, undefined)
}

describe('validation and policy failures', () => {
  test('validation failure → 400 with Next’s message', () => expectError('/_next/image?url=%2Fa.png&w=385&q=75', 400, '"w" parameter (width) of 385 is not allowed'))
  test('private IP without dangerouslyAllowLocalIP → 400 not allowed, before any connection', async () => {
    const trap = await connectionTrap()
    const strict = testSidecar({ frontend: upstream.url, nextConfig: { images: { remotePatterns: [{ hostname: '127.0.0.2' }] } } })
    const res = await request(strict.app).get(image(`http://127.0.0.2:${trap.port}/x.png`))
    assert.equal(res.status, 400)
    assert.equal(res.text, '"url" parameter is not allowed')
    assert.equal(trap.connections(), 0)
    await strict.close()
    trap.close()
  })
  test('a name that does not resolve → 500 Internal Server Error, as Next', async () => {
    const strict = testSidecar({
      frontend: upstream.url,
      nextConfig: { images: { remotePatterns: [{ hostname: 'nowhere.invalid' }] } },
      // What dns.lookup rejects with for a name that does not exist.
      resolve: async (hostname) => {
        throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname })
      },
    })
    const res = await request(strict.app).get(image('http://nowhere.invalid/x.png'))
    assert.equal(res.status, 500)
    assert.equal(res.text, 'Internal Server Error')
    await strict.close()
  })
  test('a hostname resolving to a private address → 400 not allowed', async () => {
    const strict = testSidecar({
      frontend: upstream.url,
      nextConfig: { images: { remotePatterns: [{ hostname: 'images.test' }] } },
      resolve: async () => [{ address: '127.0.0.2', family: 4 }],
    })
    const res = await request(strict.app).get(image('http://images.test/x.png'))
    assert.equal(res.status, 400)
    assert.equal(res.text, '"url" parameter is not allowed')
    await strict.close()
  })
  test('not an image → 400', () => expectError(image('/corpus/bad/text.txt'), 400, "The requested resource isn't a valid image."))
  test('SVG without dangerouslyAllowSVG → 400', () => expectError(image('/corpus/svg/debian-logo.svg'), 400, '"url" parameter is valid but image type is not allowed'))
  test('images.unoptimized → 404 for every image request', async () => {
    const off = testSidecar({ frontend: upstream.url, nextConfig: { images: { unoptimized: true } } })
    assert.equal((await request(off.app).get('/_next/image')).status, 404)
    await off.close()
  })
  for (const images of [{ loader: 'custom', loaderFile: './my-loader.js' }, { loader: 'imgix', path: 'https://example.imgix.net/' }]) {
    test(`images.loader "${images.loader}" → 404 for every image request, as Next's route`, async () => {
      const other = testSidecar({ frontend: upstream.url, nextConfig: { images } })
      assert.equal((await request(other.app).get(image('/corpus/png/chelsea.png'))).status, 404)
      await other.close()
    })
  }
  test('malformed Accept header → 400 (Next: 500)', async () => {
    const res = await request(sidecar.app).get(image('/corpus/png/chelsea.png')).set('Accept', 'image/webp;x')
    assert.equal(res.status, 400)
  })
})

describe('external upstream failures', () => {
  const ext = (path: string) => image(`${upstream.url}${path}`)
  test('empty body → 400', () => expectError(ext('/empty'), 400, UPSTREAM_INVALID))
  test('more than 5 content-encodings → 400', () => expectError(ext('/codings/6/png/coins-gray.png'), 400, UPSTREAM_INVALID))
  test('5 content-encodings are all decoded → 200', async () => {
    const res = await request(sidecar.app).get(ext('/codings/5/png/coins-gray.png')).set('Accept', 'image/webp')
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-type'], 'image/webp')
  })
  test('404 → 404', () => expectError(ext('/status/404'), 404, UPSTREAM_INVALID))
  test('503 → 503 with one attempt', () => expectError(ext('/status/503'), 503, UPSTREAM_INVALID))
  test('3xx without Location → 500', () => expectError(ext('/status/304'), 500, UPSTREAM_INVALID))
  test('more redirects than maximumRedirects → 508', () => expectError(ext('/loop'), 508, UPSTREAM_INVALID))
  test('body over maximumResponseBody → 413', () => expectError(ext('/corpus/photo-jpeg/garden.jpg'), 413, UPSTREAM_INVALID))
  test('decoded body over maximumResponseBody → 413', () => expectError(ext('/encoded/gzip/photo-jpeg/garden.jpg'), 413, UPSTREAM_INVALID))
  test('no answer within the timeout → 504', () => expectError(ext('/hang'), 504, '"url" parameter is valid but upstream response timed out'))
  test('connection refused → 500 Internal Server Error', async () => {
    const port = await closedPort()
    const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(port) })
    const res = await request(s.app).get(image(`http://127.0.0.1:${port}/x.png`))
    assert.equal(res.status, 500)
    assert.equal(res.text, 'Internal Server Error')
    await s.close()
  })
})

describe('internal (frontend) failures', () => {
  test('missing file → 404', () => expectError(image('/corpus/none.png'), 404, INTERNAL_INVALID))
  test('3xx on the 16.4 line → 500', async () => {
    const s = testSidecar({ frontend: upstream.url, nextVersion: '16.4' })
    const res = await request(s.app).get(image('/redirect/1'))
    assert.equal(res.status, 500)
    assert.equal(res.text, INTERNAL_INVALID)
    await s.close()
  })
  test('3xx on the 16.5 line (the default) is followed; past maximumRedirects (3) → 508', async () => {
    const s = testSidecar({ frontend: upstream.url })
    const followed = await request(s.app).get(image('/redirect/3')).set('accept', 'image/webp')
    assert.equal(followed.status, 200)
    assert.equal(followed.headers['content-type'], 'image/webp')
    const past = await request(s.app).get(image('/redirect/4'))
    assert.equal(past.status, 508)
    assert.equal(past.text, INTERNAL_INVALID)
    await s.close()
  })
  test('empty body → 400', () => expectError(image('/empty'), 400, INTERNAL_INVALID))
  test('body over maximumResponseBody → 413', () => expectError(image('/corpus/photo-jpeg/garden.jpg'), 413, INTERNAL_INVALID))
  test('frontend unreachable → 500 upstream invalid', async () => {
    const port = await closedPort()
    const s = testSidecar({ frontend: `http://127.0.0.1:${port}` })
    const res = await request(s.app).get(image('/x.png'))
    assert.equal(res.status, 500)
    assert.equal(res.text, UPSTREAM_INVALID)
    await s.close()
  })
})

describe('retries (beyond Next)', () => {
  test('transient 503s are retried until the upstream answers', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port), maxAttempts: 3 })
    const res = await request(s.app).get(image(`${upstream.url}/flaky/2/png/chelsea.png`))
    assert.equal(res.status, 200)
    await s.close()
  })
  test('exhausted retries → 502', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port), maxAttempts: 2 })
    const res = await request(s.app).get(image(`${upstream.url}/status/503`))
    assert.equal(res.status, 502)
    assert.match(res.text, /after 2 attempts/)
    await s.close()
  })
  test('a 404 is not retried', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port), maxAttempts: 3 })
    const before = upstream.requests.filter((r) => r.url === '/status/404?r').length
    const res = await request(s.app).get(image(`${upstream.url}/status/404?r`))
    assert.equal(res.status, 404)
    assert.equal(upstream.requests.filter((r) => r.url === '/status/404?r').length, before + 1)
    await s.close()
  })
  test('the job deadline ends a hung upstream with 504', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port), maxAttempts: 3, timeoutMs: 300, upstreamTimeoutMs: 10_000 })
    const started = Date.now()
    const res = await request(s.app).get(image(`${upstream.url}/hang`))
    assert.equal(res.status, 504)
    assert.ok(Date.now() - started < 5000)
    await s.close()
  })
})

describe('hostile inputs', () => {
  const bad = readdirSync(join(CORPUS, 'bad'))
  for (const file of bad) {
    test(`bad/${file} gets a 4xx or its original bytes, never a 5xx`, async () => {
      const res = await request(sidecar.app).get(image(`/corpus/bad/${file}`, 64)).set('Accept', 'image/webp').buffer(true).parse((r, cb) => {
        const chunks: Buffer[] = []
        r.on('data', (c: Buffer) => chunks.push(c))
        r.on('end', () => cb(null, Buffer.concat(chunks)))
      })
      if (res.status === 200) {
        // Either optimized (sharp could read it) or the original bytes (Next's fallback).
        const original = readFileSync(join(CORPUS, 'bad', file))
        assert.ok(res.body.equals(original) || res.headers['content-type'] === 'image/webp', `${file}: ${res.headers['content-type']}`)
      } else {
        assert.ok(res.status >= 400 && res.status < 500, `${file}: ${res.status}`)
      }
    })
  }
})

describe('SSRF guard (no connection is ever attempted off this machine)', () => {
  // Each literal is a loopback address in disguise; the guard must refuse it before connecting.
  const literals = ['http://127.0.0.2:1/x.png', 'http://[::1]:1/x.png', 'http://[::ffff:127.0.0.2]:1/x.png', 'http://2130706434:1/x.png', 'http://0x7f.0.0.2:1/x.png', 'http://127.1:1/x.png', 'http://[0:0:0:0:0:ffff:7f00:2]:1/x.png']
  for (const literal of literals) {
    test(`${literal} → 400 not allowed, no connection made`, async () => {
      const trap = await connectionTrap()
      const url = literal.replace(':1/', `:${trap.port}/`)
      const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { remotePatterns: [{ hostname: '**' }] } } })
      const res = await request(s.app).get(image(url))
      assert.equal(res.status, 400)
      assert.equal(res.text, '"url" parameter is not allowed')
      assert.equal(trap.connections(), 0)
      await s.close()
      trap.close()
    })
  }
  test('a name resolving to any private address is refused, resolved only once, no connection made', async () => {
    const trap = await connectionTrap()
    let lookups = 0
    const s = testSidecar({
      frontend: upstream.url,
      nextConfig: { images: { remotePatterns: [{ hostname: 'mixed.test' }] } },
      resolve: async () => {
        lookups++
        return [
          { address: '127.0.0.2', family: 4 },
          { address: '::1', family: 6 },
        ]
      },
    })
    const res = await request(s.app).get(image(`http://mixed.test:${trap.port}/x.png`))
    assert.equal(res.status, 400)
    assert.equal(res.text, '"url" parameter is not allowed')
    assert.equal(lookups, 1)
    assert.equal(trap.connections(), 0)
    await s.close()
    trap.close()
  })
  test('the pinned lookup only ever answers with the checked addresses', async () => {
    const { createPinnedLookup } = await import('../../sidecar/upstream/external.js')
    const lookup = createPinnedLookup('img.test', [{ address: '127.0.0.2', family: 4 }])
    const answer = await new Promise<unknown>((resolve) => lookup('img.test', { all: true }, (err, addresses) => resolve(err ?? addresses)))
    assert.deepEqual(answer, [{ address: '127.0.0.2', family: 4 }])
    const other = await new Promise<unknown>((resolve) => lookup('rebound.test', {}, (err) => resolve(err)))
    assert.ok(other instanceof Error)
    const v6 = await new Promise<unknown>((resolve) => lookup('img.test', { family: 6 }, (err) => resolve(err)))
    assert.equal((v6 as NodeJS.ErrnoException).code, 'ENODATA')
  })
})

describe('signed URLs (opt-in)', () => {
  const path = `/_next/image?url=${encodeURIComponent('/corpus/tiny/one-pixel.png')}&w=64&q=75`
  test('without a signature → 403 before any upstream request', async () => {
    const s = testSidecar({ frontend: upstream.url, signingKey: 'secret' })
    const before = upstream.requests.length
    const res = await request(s.app).get(path)
    assert.equal(res.status, 403)
    assert.equal(res.text, '"s" parameter (signature) is invalid')
    assert.equal(upstream.requests.length, before)
    await s.close()
  })
  test('with a wrong signature → 403', async () => {
    const s = testSidecar({ frontend: upstream.url, signingKey: 'secret' })
    assert.equal((await request(s.app).get(`${path}&s=${signImageParams('other', '/corpus/tiny/one-pixel.png', '64', '75')}`)).status, 403)
    await s.close()
  })
  test('with the right signature → served', async () => {
    const s = testSidecar({ frontend: upstream.url, signingKey: 'secret' })
    assert.equal((await request(s.app).get(`${path}&s=${signImageParams('secret', '/corpus/tiny/one-pixel.png', '64', '75')}`)).status, 200)
    await s.close()
  })
  test('off by default: an unsigned request is served', async () => {
    assert.equal((await request(sidecar.app).get(path)).status, 200)
  })
})
