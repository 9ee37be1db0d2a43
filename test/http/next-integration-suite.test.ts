/**
 * Cases derived from Next's own integration test of its optimizer (test/integration/image-optimizer,
 * the production cases of `runTests` under both of its configs), written for the sidecar: the app
 * the suite serves is a loopback frontend here (the same public files and slow-image server), the
 * expectations are the suite's. Where a difference from `next start` was found (issue 39) the case
 * pins Next's exact answer: the bytes of a header, the log line, the status of a timeout.
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import { once } from 'node:events'
import { Writable } from 'node:stream'
import { crc32 } from 'node:zlib'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { pino } from 'pino'
import sharp from 'sharp'
import isAnimated from 'is-animated'
import { createSidecar } from '../../sidecar/server/app.js'
import { DEFAULTS } from '../../sidecar/server/options.js'
import { MESSAGES } from '../../sidecar/errors.js'
import { corpusFile } from '../helpers/upstream-server.js'
import { REPO, buildFixtureApp, startNext, type RunningNext } from '../helpers/next-app.js'
import { loadNextConfig } from '../../sidecar/next/next-config.js'

const NON_ASCII = '/äöüščří.png'

/** A PNG chunk with its CRC. */
function chunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4)
  length.writeUInt32BE(data.length)
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data])
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(body))
  return Buffer.concat([length, body, crc])
}

/**
 * A two-frame APNG made from a PNG: acTL and an fcTL before its IDAT, then a second frame (fcTL,
 * fdAT with the same data), which is what Next's `is-animated` looks for.
 */
function apngFrom(png: Buffer): Buffer {
  const chunks: Array<{ type: string; data: Buffer }> = []
  for (let at = 8; at < png.length;) {
    const length = png.readUInt32BE(at)
    chunks.push({ type: png.toString('latin1', at + 4, at + 8), data: png.subarray(at + 8, at + 8 + length) })
    at += 12 + length
  }
  const ihdr = chunks.find((c) => c.type === 'IHDR')!.data
  const idat = Buffer.concat(chunks.filter((c) => c.type === 'IDAT').map((c) => c.data))
  const u32 = (...values: number[]) => Buffer.concat(values.map((v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b }))
  // fcTL: sequence, width, height, x, y, delay 1/10 s, dispose 0, blend 0.
  const fctl = (sequence: number) => Buffer.concat([u32(sequence, ihdr.readUInt32BE(0), ihdr.readUInt32BE(4), 0, 0), Buffer.from([0, 1, 0, 10, 0, 0])])
  return Buffer.concat([
    png.subarray(0, 8),
    chunk('IHDR', ihdr),
    chunk('acTL', u32(2, 0)),
    chunk('fcTL', fctl(0)),
    chunk('IDAT', idat),
    chunk('fcTL', fctl(1)),
    chunk('fdAT', Buffer.concat([u32(2), idat])),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

/** The public files of the suite's app, from the corpus. */
const PUBLIC: Record<string, Buffer> = {
  '/test.png': corpusFile('png/chelsea.png'),
  [NON_ASCII]: corpusFile('png/chelsea.png'),
  '/animated.gif': corpusFile('gif-animated/no-time-for-that.gif'),
  '/animated.png': apngFrom(corpusFile('png/coins-gray.png')),
  '/animated.webp': corpusFile('webp-animated/flowers-3-frames.webp'),
  '/test.jpg': corpusFile('photo-jpeg/rocket.jpg'),
  '/test.webp': corpusFile('webp/garden-lossy.webp'),
  '/test.avif': corpusFile('avif/chelsea.avif'),
  '/test.gif': corpusFile('gif-static/coins.gif'),
  '/test.tiff': corpusFile('tiff/chessboard-u16.tif'),
  '/test.svg': corpusFile('svg/oceans.svg'),
  '/test.ico': corpusFile('ico-bmp/debian-emblem.ico'),
  '/test.bmp': corpusFile('ico-bmp/coffee.bmp'),
  '/test.txt': corpusFile('bad/text.txt'),
  '/test.pdf': Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n'),
  '/png-as-octet-stream': corpusFile('png/chelsea.png'),
  '/api/stateful/test.png': corpusFile('png/chelsea.png'),
  '/_next/static/media/test.fab2915d.jpg': corpusFile('photo-jpeg/rocket.jpg'),
}

/**
 * The suite's app (its public files) and its slow-image server (`/slow.png?delay=ms`, answering
 * after `delay`), on one loopback server.
 */
async function startApp() {
  const requests: string[] = []
  const server: Server = createServer((req, res) => {
    requests.push(req.url ?? '')
    const url = new URL(req.url ?? '/', 'http://x')
    if (url.pathname === '/slow.png' || url.searchParams.has('status')) {
      // The suite's slow-image server: a delay, then the status asked for (399: a body, no
      // image; 301: to `location`), else test.png.
      const status = Number(url.searchParams.get('status')) || 200
      const timer = setTimeout(() => {
        if (status === 301) return void res.writeHead(301, { location: url.searchParams.get('location') ?? '/' }).end()
        if (status === 399) return void res.writeHead(399).end('invalid status')
        res.writeHead(status, { 'content-type': 'image/png' }).end(PUBLIC['/test.png'])
      }, Number(url.searchParams.get('delay')) || 0)
      res.on('close', () => clearTimeout(timer))
      return
    }
    const body = PUBLIC[decodeURIComponent(url.pathname)]
    if (!body) return void res.writeHead(404).end('not found')
    res.setHeader('content-type', 'application/octet-stream').end(body)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { url, requests, close: () => new Promise<void>((r) => server.close(() => r())).then(() => undefined, () => undefined), server }
}

/** Every JSON line a pino logger wrote. */
function capturedLogger() {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  return { logger: pino({ level: 'info' }, stream), lines }
}

interface RawResponse {
  status: number
  /** The header block as the bytes on the wire. */
  head: Buffer
  body: Buffer
}

/** One request over a raw socket: the header bytes as sent, not as a client decodes them. */
async function rawGet(base: string, path: string, method = 'GET', headers: Record<string, string> = {}): Promise<RawResponse> {
  const { hostname, port } = new URL(base)
  const socket = connect(Number(port), hostname)
  socket.write(`${method} ${path} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`)
  const chunks: Buffer[] = []
  for await (const c of socket) chunks.push(c as Buffer)
  const all = Buffer.concat(chunks)
  const end = all.indexOf('\r\n\r\n')
  const head = all.subarray(0, end)
  const body = all.subarray(end + 4)
  return { status: Number(head.toString('latin1').split(' ')[1]), head, body: /^transfer-encoding: chunked$/im.test(head.toString('latin1')) ? unchunk(body) : body }
}

function unchunk(body: Buffer): Buffer {
  const parts: Buffer[] = []
  for (let at = 0; ;) {
    const lineEnd = body.indexOf('\r\n', at)
    const size = parseInt(body.toString('latin1', at, lineEnd), 16)
    if (!size) return Buffer.concat(parts)
    parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size))
    at = lineEnd + 2 + size + 2
  }
}

/** The raw bytes of one header's value. */
function headerBytes(head: Buffer, name: string): Buffer | undefined {
  const lines = head.toString('latin1').split('\r\n')
  const line = lines.find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`))
  return line === undefined ? undefined : Buffer.from(line.slice(name.length + 1).trimStart(), 'latin1')
}

const query = (url: string, w: number, q: number) => `/_next/image?url=${encodeURIComponent(url)}&w=${w}&q=${q}`

/** Next's own Content-Disposition (its compiled `content-disposition`), for the 16.4.6 line. */
const nextContentDisposition = createRequire(join(REPO, 'test/next16-4/node_modules/next/package.json'))('next/dist/compiled/content-disposition') as (name: string, options: { type: string }) => string

describe('the suite\'s default config: the sidecar with its defaults', () => {
  let app: Awaited<ReturnType<typeof startApp>>
  let sidecar: ReturnType<typeof createSidecar>
  let server: Server & { url: string }
  let log: ReturnType<typeof capturedLogger>

  before(async () => {
    app = await startApp()
    log = capturedLogger()
    sidecar = createSidecar({
      frontend: app.url,
      nextConfig: { images: { dangerouslyAllowLocalIP: true, remotePatterns: [{ protocol: 'http', hostname: '127.0.0.1' }] } },
      cache: 'memory://',
      logger: log.logger,
      // The default attempts (3); the upstream timeout is shortened from Next's 7 s to keep the test short.
      maxAttempts: DEFAULTS.maxAttempts,
      upstreamTimeoutMs: 1000,
    })
    server = await sidecar.listen(0, '127.0.0.1')
  })
  after(async () => {
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
    await sidecar.close()
    await app.close()
  })

  describe('an upstream that times out (issue 39.1)', () => {
    test('an absolute source answering after the timeout: Next\'s 504 and text after one attempt, not a retried 502', async () => {
      const slow = `${app.url}/slow.png?delay=3000`
      const started = Date.now()
      const res = await rawGet(server.url, query(slow, 384, 75))
      const elapsed = Date.now() - started
      assert.equal(res.status, 504)
      assert.equal(res.body.toString(), MESSAGES.upstreamTimedOut)
      assert.equal(app.requests.filter((u) => u === '/slow.png?delay=3000').length, 1, 'a timeout is not retried')
      assert.ok(elapsed < 2 * 1000 + 500, `answered after ${elapsed} ms, about one upstream timeout`)
    })
  })

  describe('Content-Disposition of a non-ASCII file name (issue 39.3)', () => {
    // Next's suite: 'should handle non-ascii characters in image url'. The fallback filename="…"
    // is Latin-1 on the wire, as `next start` writes it (ä ö ü í as e4 f6 fc ed, the rest "?").
    const expected = Buffer.from(nextContentDisposition('äöüščří.webp', { type: 'attachment' }), 'latin1')
    const path = query(NON_ASCII, 384, 75)
    const accept = { Accept: 'image/webp' }

    test('a MISS: 200 and Next\'s header bytes', async () => {
      const res = await rawGet(server.url, path, 'GET', accept)
      assert.equal(res.status, 200)
      assert.equal(headerBytes(res.head, 'X-Nextjs-Cache')?.toString(), 'MISS')
      assert.deepEqual(headerBytes(res.head, 'Content-Disposition'), expected)
      assert.ok(expected.includes(Buffer.from([0x22, 0xe4, 0xf6, 0xfc, 0x3f, 0x3f, 0x3f, 0xed, 0x2e])), 'the expectation itself is Latin-1')
    })
    test('a HIT (the fast path) and a HEAD (the full path): the same bytes', async () => {
      const hit = await rawGet(server.url, path, 'GET', accept)
      assert.equal(headerBytes(hit.head, 'X-Nextjs-Cache')?.toString(), 'HIT')
      assert.deepEqual(headerBytes(hit.head, 'Content-Disposition'), expected)
      const head = await rawGet(server.url, path, 'HEAD', accept)
      assert.equal(head.status, 200)
      assert.deepEqual(headerBytes(head.head, 'Content-Disposition'), expected)
    })
  })

  describe('the animated-image warning (issue 39.2)', () => {
    const warning = (href: string) => `The requested resource "${href}" is an animated image so it will not be optimized. Consider adding the "unoptimized" property to the <Image>.`

    test('the text is every supported line\'s own (read from its installed source)', () => {
      const sources = ['node_modules/next/dist/server/image-optimizer/transform.js', 'test/next16-4/node_modules/next/dist/server/image-optimizer/transform.js', 'test/next15/node_modules/next/dist/server/image-optimizer.js']
      for (const source of sources) assert.ok(readFileSync(join(REPO, source), 'utf8').includes(warning('${href}').replace(/^The/, '`The')), source)
    })
    const warningsFor = (href: string) => log.lines.filter((l) => l.msg === warning(href))

    for (const [href, type] of [['/animated.gif', 'image/gif'], ['/animated.png', 'image/png'], ['/animated.webp', 'image/webp']] as const) {
      test(`${href}: the source's bytes as they are, and Next's warning once per source`, async () => {
        const first = await rawGet(server.url, query(href, 384, 75))
        assert.equal(first.status, 200)
        assert.equal(headerBytes(first.head, 'Content-Type')?.toString(), type)
        assert.deepEqual(first.body, PUBLIC[href])
        assert.equal(warningsFor(href).length, 1)
        assert.equal(warningsFor(href)[0]!.level, 40, 'a warning')
        // Another variant of the same source is transformed again, and not warned about again.
        const second = await rawGet(server.url, query(href, 640, 75))
        assert.equal(second.status, 200)
        assert.equal(warningsFor(href).length, 1)
      })
    }

    test('a presigned source: the signature is redacted in the text as in the href field', async () => {
      const href = `${app.url}/animated.webp?X-Amz-Date=20260101T000000Z&X-Amz-Signature=0123456789abcdef`
      assert.equal((await rawGet(server.url, query(href, 384, 75))).status, 200)
      const lines = log.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('animated.webp?'))
      assert.equal(lines.length, 1)
      assert.equal(lines[0]!.msg, warning(href.replace('0123456789abcdef', 'REDACTED')))
      assert.ok(!JSON.stringify(log.lines).includes('0123456789abcdef'))
    })

    test('an absolute animated source is named by its full URL, and a still image is not warned about', async () => {
      const href = `${app.url}/animated.gif`
      assert.equal((await rawGet(server.url, query(href, 384, 75))).status, 200)
      assert.equal(warningsFor(href).length, 1)
      assert.equal((await rawGet(server.url, query("/test.png", 384, 75))).status, 200)
      assert.equal(log.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('"/test.png"')).length, 0)
    })
  })
})

/**
 * The production cases of the suite's `runTests`, under its two configs: "w/o next.config.js"
 * (Next's defaults, w 384, q 75) and "with next.config.js" (remote localhost, AVIF first, its own
 * sizes and qualities, w 399, q 100). The suite's own expectations, written once as data; cases
 * needing the internet (vercel.app hosts) or `next dev` are left out.
 */
interface SuiteConfig {
  name: string
  images: Record<string, unknown>
  w: number
  q: number
  remote: boolean
  avif: boolean
}
const SUITE_CONFIGS: SuiteConfig[] = [
  { name: 'w/o next.config.js', images: {}, w: 384, q: 75, remote: false, avif: false },
  {
    name: 'with next.config.js',
    images: { dangerouslyAllowLocalIP: true, domains: ['localhost', '127.0.0.1', 'example.com', 'assets.vercel.com', 'image-optimization-test.vercel.app'], formats: ['image/avif', 'image/webp'], deviceSizes: [399, 1080], qualities: [50, 75, 100] },
    w: 399,
    q: 100,
    remote: true,
    avif: true,
  },
]

interface SuiteCase {
  name: string
  /** The url parameter (a function of the app's and the slow server's origin), or a raw query. */
  url?: (origin: string) => string
  query?: (c: SuiteConfig) => Record<string, string | number>
  accept?: string
  status: number
  text?: string
  type?: string
  /** The file name of Content-Disposition (the type is Next's default, attachment). */
  file?: string
  /** The width of the answer: a number, or the source's own. */
  width?: number | 'requested'
  animated?: boolean
  cache?: 'immutable'
  only?: 'remote' | 'local'
}

const OLD_SAFARI = 'image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5'
const bad = (name: string, query: (c: SuiteConfig) => Record<string, string | number>, text: string, status = 400): SuiteCase => ({ name, query, status, text })
const SUITE_CASES: SuiteCase[] = [
  { name: 'should handle non-ascii characters in image url', url: () => NON_ASCII, status: 200 },
  { name: 'should maintain animated gif', url: () => '/animated.gif', status: 200, type: 'image/gif', file: 'animated.gif', animated: true },
  { name: 'should maintain animated png', url: () => '/animated.png', status: 200, type: 'image/png', file: 'animated.png', animated: true },
  { name: 'should maintain animated webp', url: () => '/animated.webp', status: 200, type: 'image/webp', file: 'animated.webp', animated: true },
  { name: 'should not allow vector svg', url: () => '/test.svg', accept: 'image/webp', status: 400, text: MESSAGES.typeNotAllowed },
  { name: 'should not allow pdf format', url: () => '/test.pdf', accept: 'image/webp', status: 400, text: MESSAGES.notAnImage },
  { name: 'should maintain ico format', url: () => '/test.ico', accept: 'image/webp', status: 200, type: 'image/x-icon', file: 'test.ico' },
  { name: 'should maintain jpg format for old Safari', url: () => '/test.jpg', accept: OLD_SAFARI, status: 200, type: 'image/jpeg', file: 'test.jpeg' },
  { name: 'should maintain png format for old Safari', url: () => '/test.png', accept: OLD_SAFARI, status: 200, type: 'image/png', file: 'test.png' },
  { name: 'should downlevel webp format to jpeg for old Safari', url: () => '/test.webp', accept: OLD_SAFARI, status: 200, type: 'image/jpeg', file: 'test.jpeg', width: 'requested' },
  { name: 'should downlevel avif format to jpeg for old Safari', url: () => '/test.avif', accept: OLD_SAFARI, status: 200, type: 'image/jpeg', file: 'test.jpeg', width: 'requested' },
  bad('should fail when url is missing', (c) => ({ w: c.w, q: c.q }), '"url" parameter is required'),
  bad('should fail when w is missing', (c) => ({ url: '/test.png', q: c.q }), '"w" parameter (width) is required'),
  bad('should fail when q is missing', (c) => ({ url: '/test.png', w: c.w }), '"q" parameter (quality) is required'),
  bad('should fail when q is greater than 100', (c) => ({ url: '/test.png', w: c.w, q: 101 }), '"q" parameter (quality) must be an integer between 1 and 100'),
  bad('should fail when q is less than 1', (c) => ({ url: '/test.png', w: c.w, q: 0 }), '"q" parameter (quality) must be an integer between 1 and 100'),
  bad('should fail when w is 0', (c) => ({ url: '/test.png', w: 0, q: c.q }), '"w" parameter (width) must be an integer greater than 0'),
  bad('should fail when w is less than 0', (c) => ({ url: '/test.png', w: -100, q: c.q }), '"w" parameter (width) must be an integer greater than 0'),
  bad('should fail when w is not a number', (c) => ({ url: '/test.png', w: 'foo', q: c.q }), '"w" parameter (width) must be an integer greater than 0'),
  bad('should fail when w is not an integer', (c) => ({ url: '/test.png', w: 99.9, q: c.q }), '"w" parameter (width) must be an integer greater than 0'),
  bad('should fail when q is not a number', (c) => ({ url: '/test.png', w: c.w, q: 'foo' }), '"q" parameter (quality) must be an integer between 1 and 100'),
  bad('should fail when q is not an integer', (c) => ({ url: '/test.png', w: c.w, q: 99.9 }), '"q" parameter (quality) must be an integer between 1 and 100'),
  bad('should fail when domain is not defined in next.config.js', (c) => ({ url: 'http://vercel.com/button', w: c.w, q: c.q }), MESSAGES.notAllowed),
  bad('should fail when width is not in next.config.js', (c) => ({ url: '/test.png', w: 1000, q: c.q }), '"w" parameter (width) of 1000 is not allowed'),
  bad('should emit blur svg when width is 8 in dev but not prod', () => ({ url: '/test.png', w: 8, q: 70 }), '"w" parameter (width) of 8 is not allowed'),
  bad('should emit blur svg when width is less than 8 in dev but not prod', () => ({ url: '/test.png', w: 3, q: 70 }), '"w" parameter (width) of 3 is not allowed'),
  { name: 'should resize relative url and webp Firefox accept header', url: () => '/test.png', accept: 'image/webp,*/*', status: 200, type: 'image/webp', file: 'test.webp', width: 'requested' },
  { name: 'should resize relative url and png accept header', url: () => '/test.png', accept: 'image/png', status: 200, type: 'image/png', file: 'test.png', width: 'requested' },
  { name: 'should resize relative url with invalid accept header as png', url: () => '/test.png', accept: 'image/invalid', status: 200, type: 'image/png', file: 'test.png', width: 'requested' },
  { name: 'should resize relative url with invalid accept header as gif', url: () => '/test.gif', accept: 'image/invalid', status: 200, type: 'image/gif', file: 'test.gif' },
  { name: 'should resize relative url with invalid accept header as tiff', url: () => '/test.tiff', accept: 'image/invalid', status: 200, type: 'image/tiff', file: 'test.tiff' },
  { name: 'should resize gif (not animated)', url: () => '/test.gif', accept: 'image/webp', status: 200, type: 'image/webp', file: 'test.webp', width: 'requested' },
  { name: 'should resize tiff', url: () => '/test.tiff', accept: 'image/webp', status: 200, type: 'image/webp', file: 'test.webp', width: 'requested' },
  { name: 'should resize avif', url: () => '/test.avif', accept: 'image/webp', status: 200, type: 'image/webp', file: 'test.webp', width: 'requested' },
  { name: 'should resize relative url and old Chrome accept header as webp', url: () => '/test.png', accept: 'image/webp,image/apng,image/*,*/*;q=0.8', status: 200, type: 'image/webp', file: 'test.webp', width: 'requested' },
  { name: 'should resize relative url and new Chrome accept header as avif', url: () => '/test.png', accept: 'image/avif,image/webp,image/apng,image/*,*/*;q=0.8', status: 200, type: 'image/avif', file: 'test.avif', width: 'requested', only: 'remote' },
  { name: 'should resize avif and maintain format', url: () => '/test.avif', accept: 'image/avif', status: 200, type: 'image/avif', file: 'test.avif', width: 'requested', only: 'remote' },
  { name: 'should resize absolute url from localhost', url: (o) => `${o}/test.png`, accept: 'image/webp', status: 200, type: 'image/webp', file: 'test.webp', width: 'requested', only: 'remote' },
  { name: 'should automatically detect image type when content-type is octet-stream', url: () => '/png-as-octet-stream', accept: 'image/webp', status: 200, type: 'image/webp', file: 'png-as-octet-stream.webp', width: 'requested', only: 'remote' },
  bad('should fail when url has file protocol', (c) => ({ url: 'file://example.vercel.sh:3000/test.png', w: c.w, q: c.q }), '"url" parameter is invalid'),
  bad('should fail when url has ftp protocol', (c) => ({ url: 'ftp://example.vercel.sh:3000/test.png', w: c.w, q: c.q }), '"url" parameter is invalid'),
  bad('should fail when url is too long', (c) => ({ url: `/${'a'.repeat(4000)}`, w: c.w, q: c.q }), '"url" parameter is too long'),
  bad('should fail when url is protocol relative', (c) => ({ url: '//example.vercel.sh', w: c.w, q: c.q }), '"url" parameter cannot be a protocol-relative URL (//)'),
  bad('should fail with relative next image url', (c) => ({ url: '/_next/image?url=test.pngw=1&q=75', w: c.w, q: c.q }), '"url" parameter cannot be recursive'),
  bad('should fail with encoded relative image url', (c) => ({ url: '%2F_next%2Fimage%3Furl%3Dtest.pngw%3D1%26q%3D1', w: c.w, q: c.q }), '"url" parameter is invalid'),
  bad('should fail with relative image url with assetPrefix', (c) => ({ url: '/assets/_next/image?url=%2Ftest.png&w=128&q=75', w: c.w, q: c.q }), '"url" parameter cannot be recursive'),
  { name: 'should fail with absolute next image url', query: (c) => ({ url: 'https://image-optimization-test.vercel.app/_next/image?url=%2Ffrog.jpg&w=1024&q=75', w: c.w, q: c.q }), status: 400, text: MESSAGES.notAllowed, only: 'local' },
  { name: 'should fail when url fails to load an image', url: (o) => `${o}/not-an-image`, status: 404, text: MESSAGES.upstreamInvalid, only: 'remote' },
  { name: 'should normalize invalid status codes', url: (o) => `${o}/slow.png?status=399`, accept: 'image/webp', status: 500, only: 'remote' },
  { name: 'should follow redirect when dangerouslyAllowLocalIP enabled', url: (o) => `${o}/?status=301&location=%2Fslow.png`, status: 200, only: 'remote' },
  { name: 'should maintain bmp', url: () => '/test.bmp', accept: 'image/invalid', status: 200, type: 'image/bmp', file: 'test.bmp' },
  { name: 'should not resize if requested width is larger than original source image', query: (c) => ({ url: '/test.jpg', w: 1080, q: c.q }), accept: 'image/webp', status: 200, type: 'image/webp', file: 'test.webp', width: 640 },
  { name: 'should set cache-control to immutable for static images', url: () => '/_next/static/media/test.fab2915d.jpg', accept: 'image/webp', status: 200, file: 'test.webp', cache: 'immutable', width: 'requested' },
  { name: "should error if the resource isn't a valid image", url: () => '/test.txt', accept: 'image/webp', status: 400, text: MESSAGES.notAnImage },
]

const imagePath = (query: Record<string, string | number>) => `/_next/image?${new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]))}`

for (const config of SUITE_CONFIGS) {
  describe(`the suite's production cases, ${config.name} (the sidecar, Next 16.5 semantics)`, () => {
    let app: Awaited<ReturnType<typeof startApp>>
    let sidecar: ReturnType<typeof createSidecar>
    let server: Server & { url: string }

    before(async () => {
      app = await startApp()
      sidecar = createSidecar({ frontend: app.url, nextConfig: { images: config.images }, cache: 'memory://', logger: pino({ level: 'silent' }), maxAttempts: DEFAULTS.maxAttempts })
      server = await sidecar.listen(0, '127.0.0.1')
    })
    after(async () => {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
      await sidecar.close()
      await app.close()
    })

    for (const c of SUITE_CASES) {
      if ((c.only === 'remote' && !config.remote) || (c.only === 'local' && config.remote)) continue
      test(c.name, async () => {
        const query = c.query ? c.query(config) : { url: c.url!(app.url), w: config.w, q: config.q }
        const res = await rawGet(server.url, imagePath(query), 'GET', c.accept ? { Accept: c.accept } : {})
        const header = (name: string) => headerBytes(res.head, name)?.toString('latin1')
        assert.equal(res.status, c.status, res.status >= 400 ? res.body.toString() : undefined)
        if (c.text !== undefined) assert.equal(res.body.toString(), c.text)
        if (c.status !== 200) return
        if (c.type) assert.equal(header('Content-Type'), c.type)
        assert.equal(header('Cache-Control'), c.cache === 'immutable' ? 'public, max-age=315360000, immutable' : 'public, max-age=14400, must-revalidate')
        assert.match(header('Vary') ?? '', /^Accept(,|$)/)
        assert.ok(header('ETag'))
        if (c.file) assert.equal(header('Content-Disposition'), `attachment; filename="${c.file}"`)
        assert.equal(header('Content-Length'), String(res.body.byteLength))
        if (c.width !== undefined) {
          const source = await sharp(PUBLIC[String(query.url).replace(/^https?:\/\/[^/]+/, '')] ?? PUBLIC['/test.png']).metadata()
          const expected = c.width === 'requested' ? Math.min(Number(query.w), source.width!) : c.width
          assert.equal((await sharp(res.body).metadata()).width, expected)
        }
        assert.equal(isAnimated(res.body), c.animated ?? false)
      })
    }

    test('should set 304 status without body when etag matches if-none-match', async () => {
      const path = imagePath({ url: '/test.jpg', w: config.w, q: config.q })
      const first = await rawGet(server.url, path, 'GET', { Accept: 'image/webp' })
      const etag = headerBytes(first.head, 'ETag')!.toString()
      const second = await rawGet(server.url, path, 'GET', { Accept: 'image/webp', 'If-None-Match': etag })
      assert.equal(second.status, 304)
      assert.equal(headerBytes(second.head, 'Content-Type'), undefined)
      assert.equal(headerBytes(second.head, 'Content-Disposition'), undefined)
      assert.equal(headerBytes(second.head, 'ETag')?.toString(), etag)
      assert.equal(headerBytes(second.head, 'Cache-Control')?.toString(), 'public, max-age=14400, must-revalidate')
      assert.equal(second.body.byteLength, 0)
    })

    test('should use cache when query is the same for internal image (MISS, then HIT)', async () => {
      const path = imagePath({ url: '/api/stateful/test.png', w: config.w, q: config.q })
      const answers = [await rawGet(server.url, path, 'GET', { Accept: 'image/webp' }), await rawGet(server.url, path, 'GET', { Accept: 'image/webp' })]
      assert.deepEqual(answers.map((a) => headerBytes(a.head, 'X-Nextjs-Cache')?.toString()), ['MISS', 'HIT'])
      assert.deepEqual(answers.map((a) => headerBytes(a.head, 'Content-Disposition')?.toString()), ['attachment; filename="test.webp"', 'attachment; filename="test.webp"'])
      assert.deepEqual(answers[1]!.body, answers[0]!.body)
    })

    if (config.remote) {
      test('should handle concurrent requests: three MISS answers, one upstream fetch', async () => {
        const slow = `${app.url}/slow.png?delay=500&concurrent`
        const answers = await Promise.all([0, 1, 2].map(() => rawGet(server.url, imagePath({ url: slow, w: config.w, q: config.q }), 'GET', { Accept: 'image/webp,*/*' })))
        assert.deepEqual(answers.map((a) => a.status), [200, 200, 200])
        assert.deepEqual(answers.map((a) => headerBytes(a.head, 'X-Nextjs-Cache')?.toString()), ['MISS', 'MISS', 'MISS'])
        assert.equal(app.requests.filter((u) => u.includes('concurrent')).length, 1)
      })
    }
  })
}

/**
 * The same cases, and those needing the suite's app (its API routes), against `next start` of
 * every supported line and the sidecar in front of it with that line's semantics. Both must answer
 * alike (status, error text, type, caching headers, Content-Disposition bytes, width, animation);
 * where `next start` itself does not meet the suite's expectation (the suite runs ahead of the
 * release), the release is what the sidecar follows, and the test names those cases.
 */
const APP_CASES: SuiteCase[] = [
  { name: 'should not allow svg with application header', url: () => '/api/application.svg', accept: 'image/webp', status: 400, text: MESSAGES.notAnImage },
  { name: 'should not allow svg with comma header', url: () => '/api/comma.svg', accept: 'image/webp', status: 400, text: MESSAGES.notAnImage },
  { name: 'should not allow svg with uppercase header', url: () => '/api/uppercase.svg', accept: 'image/webp', status: 400, text: MESSAGES.notAnImage },
  { name: 'should not allow svg with wrong header', url: () => '/api/wrong-header.svg', accept: 'image/webp', status: 400, text: MESSAGES.typeNotAllowed },
  { name: 'should fail when internal url is not an image', url: () => '/api/no-header', accept: 'image/webp', status: 400, text: MESSAGES.notAnImage },
  { name: 'should error if the image file does not exist', url: () => '/does_not_exist.jpg', accept: 'image/webp', status: 400, text: MESSAGES.notAnImage },
]

const LINES = [{ line: '16.5', major: 16 }, { line: '16.4', major: 16 }, { line: '15.5', major: 15 }] as const
const SUITE_APP = join(REPO, 'test/fixtures/integration-suite-app')
const SUITE_STATIC: Record<string, string> = {
  'public/test.png': 'png/chelsea.png',
  [`public${NON_ASCII}`]: 'png/chelsea.png',
  'public/animated.gif': 'gif-animated/no-time-for-that.gif',
  'public/animated.webp': 'webp-animated/flowers-3-frames.webp',
  'public/test.jpg': 'photo-jpeg/rocket.jpg',
  'public/test.webp': 'webp/garden-lossy.webp',
  'public/test.avif': 'avif/chelsea.avif',
  'public/test.gif': 'gif-static/coins.gif',
  'public/test.tiff': 'tiff/chessboard-u16.tif',
  'public/test.svg': 'svg/oceans.svg',
  'public/test.ico': 'ico-bmp/debian-emblem.ico',
  'public/test.bmp': 'ico-bmp/coffee.bmp',
  'public/test.txt': 'bad/text.txt',
  'public/api/stateful/test.png': 'png/chelsea.png',
}

interface Answer {
  status: number
  text?: string
  type?: string
  cacheControl?: string
  vary?: string
  disposition?: string
  width?: number
  animated?: boolean
}

async function answerOf(base: string, path: string, headers: Record<string, string>): Promise<Answer> {
  const res = await rawGet(base, path, 'GET', headers)
  if (res.status !== 200) return { status: res.status, text: res.body.toString() }
  const header = (name: string) => headerBytes(res.head, name)?.toString('latin1')
  return {
    status: 200,
    type: header('Content-Type'),
    cacheControl: header('Cache-Control'),
    vary: header('Vary'),
    disposition: header('Content-Disposition'),
    width: (await sharp(res.body).metadata().catch(() => undefined))?.width,
    animated: isAnimated(res.body),
  }
}

/** Whether an answer meets the suite's expectation of a case (its status and text, type, file). */
function meetsSuite(c: SuiteCase, a: Answer): boolean {
  if (a.status !== c.status || (c.text !== undefined && a.text !== c.text)) return false
  if (c.status !== 200) return true
  return (c.type === undefined || a.type === c.type) && (c.file === undefined || a.disposition === `attachment; filename="${c.file}"`)
}

for (const { line, major } of LINES) {
  for (const config of SUITE_CONFIGS) {
    describe(`Next ${line} (next start) and the sidecar, ${config.name}`, () => {
      const dir = join(REPO, `test/.suite-app-${line}${config.remote ? '-remote' : ''}`)
      let next: RunningNext
      let slow: Awaited<ReturnType<typeof startApp>>
      let sidecar: ReturnType<typeof createSidecar>
      let server: Server & { url: string }
      const ahead: string[] = []

      before(async () => {
        buildFixtureApp(SUITE_APP, dir, [], SUITE_STATIC, line)
        // Made here, not in the corpus: an APNG and a PDF (public/ is read when next start starts).
        mkdirSync(join(dir, '.next/static/media'), { recursive: true })
        writeFileSync(join(dir, 'public/animated.png'), PUBLIC['/animated.png']!)
        writeFileSync(join(dir, 'public/test.pdf'), PUBLIC['/test.pdf']!)
        // A statically imported image as the build would emit it (served from .next/static, immutable).
        writeFileSync(join(dir, '.next/static/media/test.fab2915d.jpg'), PUBLIC['/_next/static/media/test.fab2915d.jpg']!)
        ;[next, slow] = await Promise.all([startNext(dir), startApp()])
        sidecar = createSidecar({
          frontend: next.url,
          nextConfig: await loadNextConfig(join(dir, 'next.config.mjs'), line),
          nextVersion: line,
          // Next 15 has no private-IP guard; the sidecar's (a documented deviation) is lifted to compare.
          dangerouslyAllowLocalIP: major === 15,
          cache: 'memory://',
          logger: pino({ level: 'silent' }),
          maxAttempts: DEFAULTS.maxAttempts,
        })
        server = await sidecar.listen(0, '127.0.0.1')
      })
      after(async () => {
        if (ahead.length > 0) console.log(`Next ${line}, ${config.name}: next start does not meet the suite's expectation in: ${ahead.join('; ')}`)
        server?.closeAllConnections()
        await new Promise((r) => server?.close(r) ?? r(undefined))
        await sidecar?.close()
        await next?.stop()
        await slow?.close()
      })

      for (const c of [...SUITE_CASES, ...APP_CASES]) {
        if ((c.only === 'remote' && !config.remote) || (c.only === 'local' && config.remote)) continue
        test(c.name, async () => {
          // Absolute sources: the app itself as "localhost" (as the suite does), the slow server for the rest.
          const origin = c.name.includes('from localhost') ? next.url.replace('127.0.0.1', 'localhost') : slow.url
          const query = c.query ? c.query(config) : { url: c.url!(origin), w: config.w, q: config.q }
          const headers: Record<string, string> = { ...(c.accept ? { Accept: c.accept } : {}) }
          const [fromNext, fromSidecar] = [await answerOf(next.url, imagePath(query), headers), await answerOf(server.url, imagePath(query), headers)]
          assert.deepEqual(fromSidecar, fromNext)
          if (!meetsSuite(c, fromNext)) ahead.push(`${c.name} (${fromNext.status}${fromNext.text ? ` ${fromNext.text}` : ` ${fromNext.type}`})`)
        })
      }

      if (config.remote) {
        test('should timeout for upstream image exceeding 7 seconds: Next\'s 504 from both, after one attempt', async () => {
          const url = `${slow.url}/slow.png?delay=8000&line=${line}`
          const path = imagePath({ url, w: config.w, q: config.q })
          const [fromNext, fromSidecar] = await Promise.all([answerOf(next.url, path, {}), answerOf(server.url, path, {})])
          assert.equal(fromNext.status, 504)
          assert.deepEqual(fromSidecar, fromNext)
          // One request from Next, one from the sidecar: the timeout was not retried.
          assert.equal(slow.requests.filter((u) => u.includes(`line=${line}`)).length, 2)
        })
      }

      test('should not forward cookie header', async () => {
        const path = imagePath({ url: '/api/conditional-cookie', w: config.w, q: config.q })
        const headers = { Accept: 'image/webp', Cookie: '1' }
        const [fromNext, fromSidecar] = [await answerOf(next.url, path, headers), await answerOf(server.url, path, headers)]
        assert.equal(fromNext.status, 400)
        assert.deepEqual(fromSidecar, fromNext)
      })
    })
  }
}
