/**
 * --cache-key-ignore-params: many URLs of one image differing in a cache-busting parameter are one
 * cache entry and one transform; credential-like parameters are refused unless forced, since the
 * cached object would then be served to URLs whose credentials the origin never saw.
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import request from 'supertest'
import { ConfigError } from '../../sidecar/errors.js'
import { CLI, startCli } from '../helpers/cli.js'
import { freePort } from '../helpers/next-app.js'
import { corpusFile } from '../helpers/upstream-server.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { image } from '../helpers/image-url.js'

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

const signed = (i: number) => `${upstream.url}/corpus/photo-jpeg/rocket.jpg?v=2026010${i}&t=${1000 + i}`
const transforms = async (s: ReturnType<typeof testSidecar>) => metric((await request(s.app).get('/metrics')).text, 'next_image_sidecar_transforms_total')

test('ten URLs of one image differing in t and v: one transform, one fetch with the full URL, nine HITs', async () => {
  const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port), cacheKeyIgnoreParams: ['v', 't'] })
  try {
    const seen = upstream.requests.length
    const results: string[] = []
    for (let i = 0; i < 10; i++) {
      const res = await request(s.app).get(image(signed(i), 640)).set('Accept', 'image/webp')
      assert.equal(res.status, 200)
      results.push(String(res.headers['x-nextjs-cache']))
    }
    assert.deepEqual(results, ['MISS', ...Array(9).fill('HIT')])
    assert.equal(await transforms(s), 1)
    const fetched = upstream.requests.slice(seen)
    assert.equal(fetched.length, 1)
    assert.equal(fetched[0]!.url, new URL(signed(0)).pathname + new URL(signed(0)).search, 'the fetch uses the full URL')
    // A purge names the source without the ignored parameters.
    assert.equal((await s.purge({ sources: [`${upstream.url}/corpus/photo-jpeg/rocket.jpg`] })).removed, 1)
  } finally {
    await s.close()
  }
})

test('off by default: every signed URL is its own entry (as in Next)', async () => {
  const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port) })
  try {
    for (let i = 0; i < 3; i++) assert.equal((await request(s.app).get(image(signed(i), 640)).set('Accept', 'image/webp')).headers['x-nextjs-cache'], 'MISS')
    assert.equal(await transforms(s), 3)
  } finally {
    await s.close()
  }
})

describe('credential-like parameters (found by review: a presigned private object was served to forged URLs)', () => {
  /** An origin serving a private object only to a request carrying its signature, as S3 does. */
  let origin: { url: string; port: number; close(): void; fetched: string[] }
  before(async () => {
    const fetched: string[] = []
    const server = createServer((req, res) => {
      fetched.push(req.url ?? '')
      const url = new URL(req.url ?? '/', 'http://x')
      if (url.searchParams.get('X-Amz-Signature') !== 'good') return void res.writeHead(403, { 'content-type': 'application/xml' }).end('<Error><Code>AccessDenied</Code></Error>')
      res.writeHead(200, { 'content-type': 'image/jpeg' }).end(corpusFile('photo-jpeg/rocket.jpg'))
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const { port } = server.address() as AddressInfo
    origin = { url: `http://127.0.0.1:${port}`, port, fetched, close: () => (server.closeAllConnections(), server.close()) }
  })
  after(() => origin.close())
  const presigned = (signature: string | undefined) => `${origin.url}/private/rocket.jpg?X-Amz-Credential=AKIA&t=1${signature === undefined ? '' : `&X-Amz-Signature=${signature}`}`
  const placeholder = (src: string) => `/_sidecar/placeholder?url=${encodeURIComponent(src)}`

  for (const spec of [['X-Amz-*'], ['t', 'X-Amz-Signature'], ['Signature'], ['Expires'], ['token'], ['sig'], ['X-Goog-*'], ['*']]) {
    test(`${spec.join(',')} is refused at start, naming the risk and the flag that forces it`, () => {
      assert.throws(() => testSidecar({ frontend: origin.url, nextConfig: localRemoteConfig(origin.port), cacheKeyIgnoreParams: spec }), (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.match(err.message, /--cache-key-ignore-params: .*credentials.*--dangerously-ignore-credential-params/)
        return true
      })
    })
  }

  test('with t ignored, a forged or missing signature reaches the origin and gets its refusal, as an image and as a placeholder', async () => {
    const s = testSidecar({ frontend: origin.url, nextConfig: localRemoteConfig(origin.port), cacheKeyIgnoreParams: ['t'] })
    try {
      assert.equal((await request(s.app).get(image(presigned('good'), 640)).set('Accept', 'image/webp')).status, 200)
      assert.equal((await request(s.app).get(placeholder(presigned('good')))).status, 200)
      for (const forged of ['forged', undefined]) {
        const before = origin.fetched.length
        assert.notEqual((await request(s.app).get(image(presigned(forged), 640)).set('Accept', 'image/webp')).status, 200)
        assert.notEqual((await request(s.app).get(placeholder(presigned(forged)))).status, 200)
        assert.equal(origin.fetched.length, before + 2, 'each asked the origin')
      }
    } finally {
      await s.close()
    }
  })

  test('--dangerously-ignore-credential-params forces it, with the risk the docs state: a forged URL is served the cached object', async () => {
    const s = testSidecar({ frontend: origin.url, nextConfig: localRemoteConfig(origin.port), cacheKeyIgnoreParams: ['X-Amz-*'], dangerouslyIgnoreCredentialParams: true })
    try {
      assert.equal((await request(s.app).get(image(presigned('good'), 640)).set('Accept', 'image/webp')).status, 200)
      const forged = await request(s.app).get(image(presigned('forged'), 640)).set('Accept', 'image/webp')
      assert.deepEqual([forged.status, forged.headers['x-nextjs-cache']], [200, 'HIT'])
    } finally {
      await s.close()
    }
  })

  test('the real CLI refuses --cache-key-ignore-params X-Amz-* (exit 1, one line) and starts with the dangerous flag', async () => {
    const args = ['--host', '127.0.0.1', '--cache', 'memory://', '--frontend', 'http://127.0.0.1:9', '--port', String(await freePort()), '--cache-key-ignore-params', 'X-Amz-*,t']
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    const [code] = (await once(child, 'exit')) as [number | null]
    clearTimeout(timer)
    assert.equal(code, 1)
    assert.match(stderr, /^next-image-sidecar: --cache-key-ignore-params: X-Amz-\* \(X-Amz-Signature\) would leave credentials out of the cache key.*\n$/)
    const { child: forced } = await startCli(['--cache', 'memory://', '--frontend', 'http://127.0.0.1:9', '--cache-key-ignore-params', 'X-Amz-*,t', '--dangerously-ignore-credential-params'])
    forced.kill('SIGTERM')
    await once(forced, 'exit')
  })
})
