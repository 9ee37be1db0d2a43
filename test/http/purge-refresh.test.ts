/**
 * A purge is final against a background refresh too: a refresh that is waiting on the origin when
 * the purge returns, and then fails (the source was deleted: the usual takedown order is delete,
 * then purge), must not write the purged entry back as Next's "keep the previous entry".
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import request from 'supertest'
import { corpusFile } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { frozenClock } from '../helpers/clock.js'
import { waitUntil } from '../helpers/wait.js'
import { image } from '../helpers/image-url.js'

test('a refresh that fails after a purge does not put the purged bytes back', async (t) => {
  const clock = frozenClock()
  t.after(clock.restore)
  // The origin: serves the image until it is deleted; then each request waits until the test answers it.
  let deleted = false
  const held: ServerResponse[] = []
  const origin = createServer((_req, res) => {
    if (!deleted) return void res.writeHead(200, { 'content-type': 'image/png' }).end(corpusFile('png/chelsea.png'))
    held.push(res)
  })
  origin.listen(0, '127.0.0.1')
  await once(origin, 'listening')
  t.after(() => {
    origin.closeAllConnections()
    origin.close()
  })
  const s = testSidecar({ frontend: `http://127.0.0.1:${(origin.address() as AddressInfo).port}`, nextConfig: { images: { minimumCacheTTL: 1 } } })
  t.after(() => s.close())
  const path = image('/a.png', 64)
  const get = () => request(s.app).get(path).set('Accept', 'image/webp')

  assert.equal((await get()).headers['x-nextjs-cache'], 'MISS')
  clock.advance(1001)
  deleted = true
  assert.equal((await get()).headers['x-nextjs-cache'], 'STALE') // starts the background refresh
  await waitUntil(() => held.length === 1, 'the refresh to reach the origin')
  await s.purge({ sources: ['/a.png'] })
  held.shift()!.writeHead(404).end('gone') // the refresh fails after the purge returned
  await s.idle()
  const after = get().then((res) => res) // supertest starts a request when it is awaited or then-ed
  // A new request fetches the (deleted) source again: answered 404 by the origin, never the old image.
  await waitUntil(() => held.length === 1, 'the request after the purge to reach the origin')
  held.shift()!.writeHead(404).end('gone')
  const res = await after
  assert.equal(res.status, 404)
})
