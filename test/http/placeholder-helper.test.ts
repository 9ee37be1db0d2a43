/**
 * getImagePlaceholder over real HTTP on loopback: against small node:http servers that misbehave in one
 * way each, and against a real sidecar (createSidecar) whose frontend serves ../shared/corpus.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import sharp from 'sharp'
import { getImagePlaceholder, type ImagePlaceholder } from '../../loader/src/placeholder-core.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import type { Sidecar } from '../../sidecar/server/app.js'

interface FakeSidecar {
  url: string
  requests: Array<{ url: string; headers: IncomingMessage['headers'] }>
  close(): Promise<void>
}

/** A loopback HTTP server answering every request with `handler`; close() cuts whatever is still open. */
async function fakeSidecar(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<FakeSidecar> {
  const requests: FakeSidecar['requests'] = []
  const server = createServer((req, res) => {
    requests.push({ url: req.url ?? '', headers: req.headers })
    handler(req, res)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: async () => {
      server.closeAllConnections()
      server.close()
      await once(server, 'close')
    },
  }
}

/** Runs `fn` with console.warn recorded (and kept out of the test output). */
async function withWarnings<T>(fn: () => Promise<T>): Promise<{ result: T; warnings: string[] }> {
  const warnings: string[] = []
  const original = console.warn
  console.warn = (...args: unknown[]) => void warnings.push(args.join(' '))
  try {
    return { result: await fn(), warnings }
  } finally {
    console.warn = original
  }
}

/** The environment variables the helper reads, set for one test and restored after it. */
async function withEnv<T>(values: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(values).map((name) => [name, process.env[name]]))
  const assign = (vars: Record<string, string | undefined>) => {
    for (const [name, value] of Object.entries(vars)) {
      if (value === undefined) delete process.env[name]
      else process.env[name] = value
    }
  }
  assign(values)
  try {
    return await fn()
  } finally {
    assign(saved)
  }
}

const FALLBACK = { width: 1200, height: 800 }

describe('a sidecar that does not answer in time', () => {
  let silent: FakeSidecar
  let stalling: FakeSidecar
  before(async () => {
    silent = await fakeSidecar(() => {})
    // Headers at once, then half a body and nothing more: the timeout covers the body too.
    stalling = await fakeSidecar((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' })
      res.write('{"src":"/a.jpg","wid')
    })
  })
  after(async () => {
    await silent.close()
    await stalling.close()
  })

  test('no headers: "timeout" after timeoutMs, with the fallback and one warning', async () => {
    const started = performance.now()
    const { result, warnings } = await withWarnings(() => getImagePlaceholder('/a.jpg', { sidecarUrl: silent.url, timeoutMs: 300, fallback: FALLBACK }))
    const elapsed = performance.now() - started
    assert.equal(result.error?.reason, 'timeout')
    assert.deepEqual([result.width, result.height, result.placeholder], [1200, 800, 'empty'])
    assert.ok(elapsed >= 290 && elapsed < 1300, `gave up after ${elapsed} ms`)
    assert.equal(warnings.length, 1)
    assert.match(warnings[0]!, /"\/a\.jpg" \(timeout\)/)
  })
  test('a body that stalls after the headers: "timeout" too', async () => {
    const started = performance.now()
    const { result } = await withWarnings(() => getImagePlaceholder('/a.jpg', { sidecarUrl: stalling.url, timeoutMs: 300 }))
    assert.equal(result.error?.reason, 'timeout')
    assert.ok(performance.now() - started < 1300)
  })
  test('the caller’s signal ends the wait early: "unavailable", never thrown', async () => {
    const controller = new AbortController()
    const pending = withWarnings(() => getImagePlaceholder('/a.jpg', { sidecarUrl: silent.url, timeoutMs: 10_000, signal: controller.signal }))
    const started = performance.now()
    controller.abort()
    const { result, warnings } = await pending
    assert.equal(result.error?.reason, 'unavailable')
    assert.match(result.error!.message, /aborted/)
    assert.ok(performance.now() - started < 1000)
    assert.equal(warnings.length, 1)
  })
})

describe('a sidecar that answers with a failure', () => {
  let fake: FakeSidecar
  const answers: Record<string, { status: number; body: string; type?: string }> = {
    '/err500.jpg': { status: 500, body: 'Internal Server Error' },
    '/err503.jpg': { status: 503, body: 'Service Unavailable' },
    '/err400.jpg': { status: 400, body: '"url" parameter is not allowed' },
    '/err403.jpg': { status: 403, body: '"s" parameter (signature) is invalid' },
    '/broken.jpg': { status: 200, body: '{"src":"/broken.jpg","width":', type: 'application/json' },
    '/no-size.jpg': { status: 200, body: '{"src":"/no-size.jpg","blurWidth":0,"blurHeight":0}', type: 'application/json' },
  }
  before(async () => {
    fake = await fakeSidecar((req, res) => {
      const src = new URL(req.url ?? '/', 'http://x').searchParams.get('url') ?? ''
      const answer = answers[src] ?? { status: 404, body: 'Not Found' }
      res.writeHead(answer.status, { 'content-type': answer.type ?? 'text/plain' }).end(answer.body)
    })
  })
  after(() => fake.close())

  const ask = (src: string) => withWarnings(() => getImagePlaceholder(src, { sidecarUrl: fake.url, fallback: FALLBACK }))

  test('asks GET /_sidecar/placeholder with the src encoded in `url`', async () => {
    await ask('/err500.jpg')
    assert.equal(fake.requests.at(-1)!.url, '/_sidecar/placeholder?url=%2Ferr500.jpg')
  })
  test('500 → "unavailable" with the status', async () => {
    const { result, warnings } = await ask('/err500.jpg')
    assert.deepEqual(result.error, { reason: 'unavailable', status: 500, message: 'Internal Server Error' })
    assert.deepEqual([result.width, result.height, result.placeholder], [1200, 800, 'empty'])
    assert.equal(warnings.length, 1)
  })
  test('503 → "unavailable"', async () => {
    const { result } = await ask('/err503.jpg')
    assert.deepEqual(result.error, { reason: 'unavailable', status: 503, message: 'Service Unavailable' })
  })
  test('400 with a text body → "rejected" with the status and the sidecar’s message', async () => {
    const { result, warnings } = await ask('/err400.jpg')
    assert.deepEqual(result.error, { reason: 'rejected', status: 400, message: '"url" parameter is not allowed' })
    assert.equal(warnings.length, 1)
    assert.match(warnings[0]!, /\(rejected 400\): "url" parameter is not allowed/)
  })
  test('403 → "rejected"', async () => {
    const { result } = await ask('/err403.jpg')
    assert.deepEqual(result.error, { reason: 'rejected', status: 403, message: '"s" parameter (signature) is invalid' })
  })
  test('200 with broken JSON → "unavailable"', async () => {
    const { result } = await ask('/broken.jpg')
    assert.equal(result.error?.reason, 'unavailable')
    assert.equal(result.error?.status, 200)
    assert.deepEqual([result.width, result.height, result.placeholder], [1200, 800, 'empty'])
  })
  test('200 with JSON lacking width and height → "unavailable"', async () => {
    const { result } = await ask('/no-size.jpg')
    assert.equal(result.error?.reason, 'unavailable')
    assert.equal(result.error?.status, 200)
    assert.match(result.error!.message, /width and height/)
  })
  test('nothing listening → "unavailable", naming the connection error', async () => {
    const gone = await fakeSidecar(() => {})
    await gone.close()
    const { result, warnings } = await withWarnings(() => getImagePlaceholder('/a.jpg', { sidecarUrl: gone.url }))
    assert.equal(result.error?.reason, 'unavailable')
    assert.match(result.error!.message, /ECONNREFUSED/)
    assert.equal('width' in result, false)
    assert.equal(warnings.length, 1)
  })
})

describe('found by review', () => {
  test('a timeoutMs below a millisecond never rejects', async () => {
    const { result } = await withWarnings(() => getImagePlaceholder('/a.jpg', { sidecarUrl: 'http://127.0.0.1:9', timeoutMs: 0.5 }))
    assert.ok(result.error && ['timeout', 'unavailable'].includes(result.error.reason), JSON.stringify(result.error))
  })
  for (const timeoutMs of [1500.5, 4294967296, 2147483648]) {
    test(`a timeoutMs of ${timeoutMs} never rejects, and gives a real wait`, async () => {
      const fake = await fakeSidecar((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"src":"/a.jpg","height":3,"width":4,"blurWidth":0,"blurHeight":0}'))
      try {
        const { result } = await withWarnings(() => getImagePlaceholder('/a.jpg', { sidecarUrl: fake.url, timeoutMs }))
        assert.equal(result.error, undefined, JSON.stringify(result.error))
        assert.deepEqual([result.width, result.height], [4, 3])
      } finally {
        await fake.close()
      }
    })
  }

  for (const [name, url] of [
    ['without a scheme', '10.9.8.7:3001'],
    ['with credentials', 'http://user:s3cret@127.0.0.1:1'],
    ['of another protocol', 'ftp://127.0.0.1:1'],
  ] as const) {
    test(`a sidecar URL ${name} is "not-configured", and neither the URL nor a secret of it reaches the result`, async () => {
      const { result } = await withWarnings(() => getImagePlaceholder('/photos/a.jpg', { sidecarUrl: url, fallback: FALLBACK }))
      assert.equal(result.error?.reason, 'not-configured')
      assert.doesNotMatch(JSON.stringify(result), /10\.9\.8\.7|s3cret|ftp:|_sidecar/)
    })
  }

  test('a connection error names its code, not the request URL', async () => {
    const gone = await fakeSidecar(() => {})
    await gone.close()
    const { result } = await withWarnings(() => getImagePlaceholder('/a.jpg', { sidecarUrl: gone.url }))
    assert.doesNotMatch(JSON.stringify(result), /_sidecar|127\.0\.0\.1/)
  })

  test('a 200 body past the size any placeholder has is "unavailable" without being read whole', async () => {
    let written = 0
    const endless = await fakeSidecar((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      const chunk = Buffer.alloc(64 * 1024, 0x20)
      const pump = () => {
        while (written < 512 * 1024 * 1024 && res.write(chunk)) written += chunk.length
        if (written < 512 * 1024 * 1024) res.once('drain', pump)
        else res.end()
      }
      res.write('{"src":"/a.jpg","blurDataURL":"data:image/png;base64,')
      pump()
    })
    try {
      const started = performance.now()
      const { result } = await withWarnings(() => getImagePlaceholder('/a.jpg', { sidecarUrl: endless.url, timeoutMs: 20_000 }))
      assert.equal(result.error?.reason, 'unavailable')
      assert.match(result.error!.message, /larger than/)
      assert.ok(performance.now() - started < 5000, 'it stopped reading early')
      assert.ok(written < 64 * 1024 * 1024, `the sidecar wrote ${written} bytes before the helper stopped`)
    } finally {
      await endless.close()
    }
  })

  test('an error body is cut short, not read whole', async () => {
    const huge = await fakeSidecar((_req, res) => res.writeHead(500, { 'content-type': 'text/plain' }).end('x'.repeat(8 * 1024 * 1024)))
    try {
      const { result } = await withWarnings(() => getImagePlaceholder('/a.jpg', { sidecarUrl: huge.url }))
      assert.equal(result.error?.reason, 'unavailable')
      assert.ok(result.error!.message.length <= 501)
    } finally {
      await huge.close()
    }
  })
})

describe('the real sidecar', () => {
  const KEY = 'placeholder-test-key'
  let upstream: UpstreamServer
  let open: Sidecar
  let signed: Sidecar
  let servers: Array<Server & { url: string }>
  let openUrl: string
  let signedUrl: string
  before(async () => {
    upstream = await startUpstream()
    open = testSidecar({ frontend: upstream.url })
    signed = testSidecar({ frontend: upstream.url, signingKey: KEY })
    servers = [await open.listen(0, '127.0.0.1'), await signed.listen(0, '127.0.0.1')]
    ;[openUrl, signedUrl] = servers.map((server) => server.url)
  })
  after(async () => {
    // sidecar.close() ends its store and workers; the HTTP server that listen() started is ours to close.
    for (const server of servers) {
      server.close()
      server.closeAllConnections()
    }
    await open.close()
    await signed.close()
    await upstream.close()
  })
  const unsigned = <T>(fn: () => Promise<T>) => withEnv({ IMAGE_SIDECAR_SIGNING_KEY: undefined }, fn)

  /** What the blur decodes to: its format and size. */
  async function blurOf(result: ImagePlaceholder) {
    const [, type, base64] = /^data:image\/(\w+);base64,(.+)$/.exec(result.blurDataURL ?? '') ?? []
    const meta = await sharp(Buffer.from(base64 ?? '', 'base64')).metadata()
    return { type, format: meta.format, width: meta.width, height: meta.height }
  }

  test('a JPEG: its size, an 8-pixel JPEG blur and placeholder "blur", with no warning', async () => {
    const { result, warnings } = await unsigned(() => withWarnings(() => getImagePlaceholder('/corpus/photo-jpeg/rocket.jpg', { sidecarUrl: openUrl })))
    assert.equal(result.error, undefined, JSON.stringify(result.error))
    assert.deepEqual(
      [result.src, result.width, result.height, result.blurWidth, result.blurHeight, result.placeholder],
      ['/corpus/photo-jpeg/rocket.jpg', 640, 427, 8, 5, 'blur'],
    )
    assert.deepEqual(await blurOf(result), { type: 'jpeg', format: 'jpeg', width: 8, height: 5 })
    assert.deepEqual(warnings, [])
  })
  test('a JPEG with EXIF orientation 6: width and height as displayed (swapped)', async () => {
    const result = await unsigned(() => getImagePlaceholder('/corpus/photo-jpeg/ladybird-exif-rotate-6.jpg', { sidecarUrl: openUrl }))
    assert.deepEqual([result.width, result.height, result.blurWidth, result.blurHeight], [1600, 2560, 5, 8])
  })
  test('a static GIF: its size, no blur, placeholder "empty" and no error', async () => {
    const result = await unsigned(() => getImagePlaceholder('/corpus/gif-static/coins.gif', { sidecarUrl: openUrl }))
    assert.deepEqual(result, { src: '/corpus/gif-static/coins.gif', width: 384, height: 303, blurWidth: 0, blurHeight: 0, placeholder: 'empty' })
  })
  test('a source the optimizer refuses: "rejected" with Next’s status and message', async () => {
    const { result } = await unsigned(() => withWarnings(() => getImagePlaceholder('/corpus/bad/text.txt', { sidecarUrl: openUrl, fallback: FALLBACK })))
    assert.deepEqual(result.error, { reason: 'rejected', status: 400, message: "The requested resource isn't a valid image." })
    assert.deepEqual([result.width, result.height], [1200, 800])
  })
  test('with signing on, the helper signs with IMAGE_SIDECAR_SIGNING_KEY and gets the placeholder', async () => {
    const result = await withEnv({ IMAGE_SIDECAR_SIGNING_KEY: KEY }, () => getImagePlaceholder('/corpus/png/coffee.png', { sidecarUrl: signedUrl }))
    assert.equal(result.error, undefined, JSON.stringify(result.error))
    assert.deepEqual([result.width, result.height, result.placeholder], [600, 400, 'blur'])
    assert.deepEqual(await blurOf(result), { type: 'png', format: 'png', width: 8, height: 5 })
  })
  test('with signing on, a wrong key → "rejected" 403', async () => {
    const { result } = await withEnv({ IMAGE_SIDECAR_SIGNING_KEY: 'not-the-key' }, () => withWarnings(() => getImagePlaceholder('/corpus/png/coffee.png', { sidecarUrl: signedUrl })))
    assert.deepEqual(result.error, { reason: 'rejected', status: 403, message: '"s" parameter (signature) is invalid' })
  })
  test('with signing on, no key → "rejected" 403', async () => {
    const { result } = await unsigned(() => withWarnings(() => getImagePlaceholder('/corpus/png/coffee.png', { sidecarUrl: signedUrl })))
    assert.deepEqual(result.error, { reason: 'rejected', status: 403, message: '"s" parameter (signature) is invalid' })
  })
})
