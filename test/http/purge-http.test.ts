/** POST /purge: absent without an admin token, refused without the right one (nothing removed), counted. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import request from 'supertest'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { image } from '../helpers/image-url.js'

let upstream: UpstreamServer
const TOKEN = 's3cret-admin-token'
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
    assert.deepEqual(ok.body, { removed: 1, urls: [path], processes: 0 })
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
    assert.deepEqual(await res.json(), { removed: 0, urls: [], processes: 0 })
  } finally {
    ops.close()
    await s.close()
  }
})
