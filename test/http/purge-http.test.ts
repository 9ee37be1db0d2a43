/** POST /purge: absent without an admin token, refused without the right one (nothing removed), counted. */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import request from 'supertest'
import { frozenClock } from '../helpers/clock.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { image } from '../helpers/image-url.js'

let upstream: UpstreamServer
const TOKEN = 's3cret-admin-token-0123456789abcdef'
const path = image('/corpus/photo-jpeg/rocket.jpg', 640)

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

test('without an admin token there is no /purge (404), and the cache is untouched', async () => {
  const s = testSidecar({ frontend: upstream.url })
  try {
    await request(s.app).get(path).set('Accept', 'image/webp')
    const res = await request(s.app).post('/purge').set('Authorization', `Bearer ${TOKEN}`).send({ all: true })
    assert.equal(res.status, 404)
    assert.equal((await request(s.app).get(path).set('Accept', 'image/webp')).headers['x-nextjs-cache'], 'HIT')
  } finally {
    await s.close()
  }
})

test('with a token: missing and wrong tokens are refused and remove nothing; the right one purges; all counted', async () => {
  const s = testSidecar({ frontend: upstream.url, adminToken: TOKEN })
  try {
    await request(s.app).get(path).set('Accept', 'image/webp')
    for (const auth of [undefined, 'Bearer wrong', `Bearer ${TOKEN}x`, `Basic ${TOKEN}`, `Bearer ${TOKEN.slice(0, -1)}`]) {
      const req = request(s.app).post('/purge').send({ sources: ['/corpus/photo-jpeg/rocket.jpg'] })
      const res = await (auth ? req.set('Authorization', auth) : req)
      assert.equal(res.status, 401, String(auth))
    }
    assert.equal((await request(s.app).get(path).set('Accept', 'image/webp')).headers['x-nextjs-cache'], 'HIT', 'a refused purge removed something')
    const invalid = await request(s.app).post('/purge').set('Authorization', `Bearer ${TOKEN}`).send({ prefix: '' })
    assert.equal(invalid.status, 400)
    const ok = await request(s.app).post('/purge').set('Authorization', `Bearer ${TOKEN}`).send({ sources: ['/corpus/photo-jpeg/rocket.jpg'] })
    assert.equal(ok.status, 200)
    assert.deepEqual(ok.body, { removed: 1, urls: [path], processes: 0, missed: 0 })
    assert.equal((await request(s.app).get(path).set('Accept', 'image/webp')).headers['x-nextjs-cache'], 'MISS')
    const text = (await request(s.app).get('/metrics')).text
    assert.equal(metric(text, 'next_image_sidecar_purge_requests_total', { outcome: 'unauthorized' }), 5)
    assert.equal(metric(text, 'next_image_sidecar_purge_requests_total', { outcome: 'invalid' }), 1)
    assert.equal(metric(text, 'next_image_sidecar_purge_requests_total', { outcome: 'accepted' }), 1)
  } finally {
    await s.close()
  }
})

test('with a metrics port, /purge is on the ops listener only', async () => {
  const s = testSidecar({ frontend: upstream.url, adminToken: TOKEN, metricsOnMainPort: false })
  const ops = await s.listenOps(0, '127.0.0.1')
  try {
    assert.equal((await request(s.app).post('/purge').set('Authorization', `Bearer ${TOKEN}`).send({ all: true })).status, 404)
    const res = await fetch(`${ops.url}/purge`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{"all":true}' })
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), { removed: 0, urls: [], processes: 0, missed: 0 })
  } finally {
    ops.close()
    await s.close()
  }
})

describe('the ops port (found by review: Express\'s HTML error pages with stack traces, case-insensitive and non-strict routing)', () => {
  test('errors render as on the image port: plain text, no stack trace, no file path', async () => {
    const s = testSidecar({ frontend: upstream.url, adminToken: TOKEN, metricsOnMainPort: false })
    const ops = await s.listenOps(0, '127.0.0.1')
    try {
      for (const [type, body] of [['application/json', '{"all":'], ['application/json', '{"sources":["/a.png"]}'.repeat(60_000)]] as const) {
        const res = await fetch(`${ops.url}/purge`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': type }, body })
        const text = await res.text()
        assert.ok(res.status >= 400 && res.status < 500, `${res.status}`)
        assert.doesNotMatch(String(res.headers.get('content-type')), /html/)
        assert.doesNotMatch(text, /<pre>|\s+at |node_modules|\/work\/|SyntaxError|PayloadTooLarge/, text.slice(0, 300))
      }
    } finally {
      ops.close()
      await s.close()
    }
  })

  test('routing is strict and case-sensitive: /METRICS, /metrics/, /Healthz, /purge/ and /PURGE are 404', async () => {
    const s = testSidecar({ frontend: upstream.url, adminToken: TOKEN, metricsOnMainPort: false })
    const ops = await s.listenOps(0, '127.0.0.1')
    try {
      assert.equal((await fetch(`${ops.url}/metrics`)).status, 200)
      for (const path of ['/METRICS', '/metrics/', '/Healthz', '/readyz/']) assert.equal((await fetch(`${ops.url}${path}`)).status, 404, path)
      for (const path of ['/purge/', '/PURGE']) {
        const res = await fetch(`${ops.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{"all":true}' })
        assert.equal(res.status, 404, path)
      }
    } finally {
      ops.close()
      await s.close()
    }
  })
})

describe('purge input (found by review)', () => {
  const post = (s: ReturnType<typeof testSidecar>, body: string, headers: Record<string, string> = {}) =>
    request(s.app).post('/purge').set({ authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...headers }).send(body)

  test('body-parse failures (bad JSON, an unsupported charset, too large) are 4xx, counted and logged as invalid purges', async () => {
    const lines: string[] = []
    const logger = pino({ level: 'info' }, new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }))
    const s = testSidecar({ frontend: upstream.url, adminToken: TOKEN, logger })
    try {
      const answers = [
        await post(s, '{"all":'),
        await post(s, '{"all":true}', { 'content-type': 'application/json; charset=latin-9' }),
        await post(s, JSON.stringify({ sources: [`/${'a'.repeat(1_100_000)}.png`] })),
      ]
      assert.deepEqual(answers.map((a) => a.status), [400, 415, 413])
      for (const a of answers) assert.match(a.text, /^purge: /)
      const text = (await request(s.app).get('/metrics')).text
      assert.equal(metric(text, 'next_image_sidecar_purge_requests_total', { outcome: 'invalid' }), 3)
      assert.equal(lines.filter((l) => l.includes('"msg":"purge refused"') && l.includes('"reason":"invalid body')).length, 3, lines.join(''))
    } finally {
      await s.close()
    }
  })

  test('the Bearer scheme is case-insensitive (RFC 9110 §11.1)', async () => {
    const s = testSidecar({ frontend: upstream.url, adminToken: TOKEN })
    try {
      for (const scheme of ['bearer', 'BEARER', 'BeArEr']) assert.equal((await post(s, '{"all":true}', { authorization: `${scheme} ${TOKEN}` })).status, 200, scheme)
    } finally {
      await s.close()
    }
  })

  test('a prefix that selects every source (/, http, https://) is refused: everything takes {"all": true}', async () => {
    const s = testSidecar({ frontend: upstream.url, adminToken: TOKEN })
    try {
      await request(s.app).get(path).set('Accept', 'image/webp')
      for (const prefix of ['/', 'h', 'http', 'https://', 'http:/', 'images/']) {
        const res = await post(s, JSON.stringify({ prefix }))
        assert.equal(res.status, 400, prefix)
      }
      assert.equal((await request(s.app).get(path).set('Accept', 'image/webp')).headers['x-nextjs-cache'], 'HIT')
      assert.equal((await post(s, JSON.stringify({ prefix: '/corpus/' }))).status, 200)
      assert.equal((await post(s, JSON.stringify({ prefix: 'https://cdn.example/' }))).status, 200)
    } finally {
      await s.close()
    }
  })

  test('a token shorter than 32 bytes is refused at start', () => {
    assert.throws(() => testSidecar({ frontend: upstream.url, adminToken: 'x'.repeat(31) }), /admin token.*32 bytes/)
    testSidecar({ frontend: upstream.url, adminToken: 'x'.repeat(32) }).close()
  })

  test('repeated 401s from one address back off: 429 with Retry-After, the right token included, until it passes', async (t) => {
    const s = testSidecar({ frontend: upstream.url, adminToken: TOKEN })
    const clock = frozenClock()
    t.after(() => clock.restore())
    try {
      const statuses: number[] = []
      for (let i = 0; i < 13; i++) statuses.push((await post(s, '{"all":true}', { authorization: `Bearer wrong-${i}` })).status)
      assert.deepEqual(statuses, [...Array(10).fill(401), 429, 429, 429])
      const refused = await post(s, '{"all":true}')
      assert.equal(refused.status, 429, 'the right token waits too: a back-off that let it through would tell a guesser when it was right')
      const wait = Number(refused.headers['retry-after'])
      assert.ok(wait >= 1 && wait <= 60, String(wait))
      clock.advance(wait * 1000)
      assert.equal((await post(s, '{"all":true}')).status, 200)
      assert.equal((await post(s, '{"all":true}', { authorization: 'Bearer wrong-again' })).status, 401, 'a success starts over')
      const text = (await request(s.app).get('/metrics')).text
      assert.equal(metric(text, 'next_image_sidecar_purge_requests_total', { outcome: 'throttled' }), 4)
    } finally {
      await s.close()
    }
  })
})
