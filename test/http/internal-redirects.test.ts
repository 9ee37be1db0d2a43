/**
 * Next 16.5 follows a redirect of a relative source (`fetchInternalImage`). Its own function is the
 * oracle: it and the sidecar's fetchInternal fetch the same cases from one real loopback frontend
 * (Next's `handleRequest` is given a proxy to it), and an absolute target from one real upstream;
 * outcome (bytes, Content-Type, Cache-Control, ETag) or error (status, message) must be equal, under
 * several `images.maximumRedirects` and with the private-IP guard on and off. Then the sidecar's own
 * guard on every hop: a relative hop reaches the frontend's origin only (the SSRF spellings of
 * test/helpers/ssrf-spellings.ts as Locations, with a connection trap), an absolute hop is checked
 * against private addresses and pinned to what was checked.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fetchInternal, type InternalRedirects } from '../../sidecar/upstream/frontend.js'
import { fetchExternal, type Resolver } from '../../sidecar/upstream/external.js'
import { validateUrlParam } from '../../sidecar/next/validate.js'
import { resolveNextConfig } from '../../sidecar/next/images-config.js'
import { PROFILES } from '../../sidecar/next/next-version.js'
import { MESSAGES } from '../../sidecar/errors.js'
import { NEXT_LINES } from '../helpers/next-app.js'
import { corpusFile, startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { relativeSpellingsTo } from '../helpers/ssrf-spellings.js'

const require = createRequire(import.meta.url)
const next165 = require(join(NEXT_LINES['16.5'], 'dist/server/image-optimizer.js')) as {
  fetchInternalImage: (href: string, req: object, res: object, handle: (req: any, res: any) => Promise<void>, images: object) => Promise<{ buffer: Buffer; contentType?: string; cacheControl?: string; etag: string }>
}

const PNG = corpusFile('png/chelsea.png')

/** The frontend: answers what each path says, and records every request-target it saw. */
function frontendRoute(req: IncomingMessage, res: ServerResponse): void {
  if (!URL.canParse(req.url ?? '/', 'http://x')) return void res.writeHead(400).end('bad request-target')
  const url = new URL(req.url ?? '/', 'http://x')
  const q = url.searchParams
  const parts = url.pathname.split('/').filter(Boolean)
  if (parts[0] === 'img') return void res.writeHead(200, { 'content-type': 'image/png', 'cache-control': q.get('cc') ?? 'public, max-age=60' }).end(PNG)
  if (parts[0] === 'to') return void res.writeHead(Number(q.get('status') ?? 307), q.has('to') ? { location: q.get('to')! } : {}).end('moved')
  if (parts[0] === 'chain') {
    const n = Number(parts[1])
    return void res.writeHead(307, { location: n > 0 ? `/chain/${n - 1}` : '/img/a.png' }).end()
  }
  if (parts[0] === 'text') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('not an image')
  if (parts[0] === 'status') return void res.writeHead(Number(parts[1])).end()
  res.writeHead(404).end('not found')
}

interface Outcome {
  status?: number
  raw?: string
  message?: string
  sha?: string
  contentType?: string
  cacheControl?: string
  etag?: string
}

async function outcome(fetch: () => Promise<{ buffer: Buffer; contentType?: string; cacheControl?: string; etag: string } | { notModified: true }>): Promise<Outcome> {
  try {
    const r = await fetch()
    if ('notModified' in r) return { status: 304 }
    return { sha: createHash('sha256').update(r.buffer).digest('hex'), contentType: r.contentType, cacheControl: r.cacheControl, etag: r.etag }
  } catch (err) {
    const e = err as { statusCode?: number; message: string; code?: string }
    if (typeof e.statusCode === 'number') return { status: e.statusCode, message: e.message }
    // Not an ImageError: the caller answers a bare 500; compare what failed.
    if (e.code) return { message: `raw ${e.code}` }
    throw err
  }
}

describe('internal redirects (Next 16.5): the sidecar against Next’s own fetchInternalImage', () => {
  let frontend: { url: URL; seen: string[]; close(): void }
  let upstream: UpstreamServer
  before(async () => {
    const seen: string[] = []
    const server = createServer((req, res) => {
      seen.push(req.url ?? '')
      frontendRoute(req, res)
    }).listen(0, '127.0.0.1')
    await once(server, 'listening')
    frontend = { url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`), seen, close: () => server.close() }
    upstream = await startUpstream()
  })
  after(async () => {
    frontend.close()
    await upstream.close()
  })

  /** Next's handleRequest, as next start routes the mocked request: here, by proxying it to the frontend. */
  const handleRequest = (req: { url: string }, res: any) =>
    new Promise<void>((resolve, reject) => {
      const proxied = httpRequest(new URL(req.url, frontend.url), { agent: false }, (answer) => {
        res.statusCode = answer.statusCode
        for (const [name, value] of Object.entries(answer.headers)) if (value !== undefined && name !== 'content-length' && name !== 'connection' && name !== 'date' && name !== 'keep-alive' && name !== 'transfer-encoding') res.setHeader(name, value)
        answer.on('data', (chunk: Buffer) => res.write(chunk))
        answer.on('end', () => {
          res.end()
          resolve()
        })
      })
      proxied.on('error', reject)
      proxied.end()
    })

  function ours(href: string, maximumRedirects: number, dangerouslyAllowLocalIP: boolean, resolve?: Resolver) {
    const config = resolveNextConfig({ images: { maximumRedirects, dangerouslyAllowLocalIP } }, 'test', PROFILES['16.5'])
    const common = { timeoutMs: 7000, maximumResponseBody: config.images.maximumResponseBody }
    const redirects: InternalRedirects = {
      maximumRedirects,
      validate: (location) => validateUrlParam(location, config, true),
      external: (target, left) => fetchExternal(target, { ...common, dangerouslyAllowLocalIP, maximumRedirects: left, fetchSemantics: 'per-hop', resolve }),
    }
    return fetchInternal(frontend.url, href, { ...common, checkStatus: true, redirects })
  }
  const theirs = (href: string, maximumRedirects: number, dangerouslyAllowLocalIP: boolean) =>
    next165.fetchInternalImage(href, { method: 'GET' }, {}, handleRequest, {
      maximumRedirects,
      dangerouslyAllowLocalIP,
      maximumResponseBody: 50_000_000,
      localPatterns: [{ pathname: '/nothing/**', search: '' }],
      remotePatterns: [],
      domains: [],
    })

  const to = (target: string, status = 307) => `/to?to=${encodeURIComponent(target)}&status=${status}`
  function cases(): Record<string, string> {
    const remote = (p: string) => `${upstream.url}${p}`
    return {
      'no redirect': '/img/a.png',
      ...Object.fromEntries([301, 302, 303, 307, 308].map((s) => [`${s} → an image`, to('/img/a.png', s)])),
      'a 300 is not a redirect': to('/img/a.png', 300),
      'a 304 is not a redirect': to('/img/a.png', 304),
      ...Object.fromEntries([1, 2, 3, 4].map((n) => [`a chain of ${n + 1}`, `/chain/${n}`])),
      'a redirect with no Location': '/to?status=302',
      'an unparsable Location': to('http://['),
      '→ protocol-relative': to(`//127.0.0.1:${frontend.url.port}/img/a.png`),
      '→ /_next/image': to('/_next/image?url=%2Fimg%2Fa.png&w=64&q=75'),
      '→ %5Fnext/image': to('/%5Fnext/image/'),
      '→ ftp:': to('ftp://127.0.0.1/a.png'),
      '→ data:': to('data:image/png;base64,iVBORw0KGgo='),
      '→ ../img/a.png': to('../img/a.png'),
      '→ img/a.png': to('img/a.png'),
      '→ a malformed percent-encoding': to('/%E0%A4%A'),
      '→ a long Location': to(`/img/${'x'.repeat(3080)}`),
      '→ text': to('/text'),
      '→ 404': to('/status/404'),
      '→ 500': to('/status/500'),
      '→ an empty 200': to('/status/200'),
      '→ outside localPatterns (not applied to a redirect)': to('/img/a.png?cc=max-age%3D5'),
      '→ max-age beyond 2^31 s': to('/img/a.png?cc=max-age%3D9999999999'),
      '→ absolute': to(remote('/corpus/png/chelsea.png')),
      '→ absolute, upper-case scheme': to(remote('/corpus/png/chelsea.png').replace('http:', 'HTTP:')),
      '→ absolute that redirects once': to(remote('/redirect/1?to=%2Fcorpus%2Fpng%2Fchelsea.png')),
      '→ absolute that redirects three times': to(remote('/redirect/3?to=%2Fcorpus%2Fpng%2Fchelsea.png')),
      '→ absolute 404': to(remote('/status/404')),
      '→ absolute, empty': to(remote('/empty')),
      '→ absolute, connection refused': to('http://127.0.0.1:1/a.png'),
      '→ absolute back to a relative chain': to(remote(`/redirect/1?to=${encodeURIComponent(`${frontend.url.origin}/chain/0`)}`)),
    }
  }

  for (const maximumRedirects of [0, 1, 3]) {
    for (const dangerouslyAllowLocalIP of [true, false]) {
      test(`maximumRedirects ${maximumRedirects}, dangerouslyAllowLocalIP ${dangerouslyAllowLocalIP}: every case as Next`, async () => {
        const mismatches: string[] = []
        for (const [name, href] of Object.entries(cases())) {
          const [mine, next] = [await outcome(() => ours(href, maximumRedirects, dangerouslyAllowLocalIP)), await outcome(() => theirs(href, maximumRedirects, dangerouslyAllowLocalIP))]
          try {
            assert.deepEqual(mine, next)
          } catch {
            mismatches.push(`${name}: ${JSON.stringify(mine)} ≠ ${JSON.stringify(next)}`)
          }
        }
        assert.deepEqual(mismatches, [])
      })
    }
  }

  test('a relative hop reaches the frontend’s origin only: every SSRF spelling as a Location', async () => {
    let trapped = 0
    const trap = createNetServer((socket) => {
      trapped++
      socket.destroy()
    })
    trap.listen(0, '127.0.0.2')
    await once(trap, 'listening')
    const host = `127.0.0.2:${(trap.address() as AddressInfo).port}`
    try {
      // A header value cannot carry CR or LF: those spellings cannot be a Location.
      for (const spelling of relativeSpellingsTo(host).filter((s) => !/[\r\n]/.test(s))) {
        const before = frontend.seen.length
        const result = await outcome(() => ours(to(spelling), 3, true))
        assert.ok(result.status !== undefined && result.status >= 400, `${JSON.stringify(spelling)} answered ${JSON.stringify(result)}`)
        // The hop was asked of the frontend, as written (only what a request line cannot carry encoded).
        assert.equal(frontend.seen.length, before + 2, JSON.stringify(spelling))
        assert.ok(frontend.seen.at(-1)!.includes(host), JSON.stringify(frontend.seen.at(-1)))
      }
      assert.equal(trapped, 0, 'a connection reached the trap')
    } finally {
      trap.close()
    }
  })

  test('an absolute hop is checked before connecting: a name resolving to a private address is refused, asked of DNS once', async () => {
    let lookups = 0
    const privately: Resolver = async () => {
      lookups++
      return [{ address: '127.0.0.1', family: 4 }]
    }
    const before = upstream.requests.length
    const target = to(`http://images.test:${new URL(upstream.url).port}/corpus/png/chelsea.png`)
    assert.deepEqual(await outcome(() => ours(target, 3, false, privately)), { status: 400, message: MESSAGES.notAllowed })
    assert.equal(lookups, 1)
    assert.equal(upstream.requests.length, before, 'nothing connected to the upstream')
    // A literal private address likewise, and the same hop is fetched once the guard is lifted.
    const literal = to(`${upstream.url}/corpus/png/chelsea.png`)
    assert.deepEqual(await outcome(() => ours(literal, 3, false)), { status: 400, message: MESSAGES.notAllowed })
    assert.equal(upstream.requests.length, before)
    const allowed = await outcome(() => ours(literal, 3, true))
    assert.ok(allowed.sha, JSON.stringify(allowed))
    assert.equal(upstream.requests.length, before + 1)
  })

  test('before 16.5 (no redirects option) a frontend redirect is an invalid internal response', async () => {
    const result = await outcome(() => fetchInternal(frontend.url, to('/img/a.png'), { timeoutMs: 7000, maximumResponseBody: 1e8, checkStatus: true }))
    // 307 as an error status: both Next's ImageError and ours make anything below 400 a 500.
    assert.deepEqual(result, { status: 500, message: MESSAGES.internalInvalid })
  })
})
