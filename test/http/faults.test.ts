/** Upstream faults end in Next's status within the timeout, with nothing left open. */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import request from 'supertest'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import type { Sidecar } from '../../sidecar/server/app.js'

let upstream: UpstreamServer
let sidecar: Sidecar
const image = (url: string) => `/_next/image?url=${encodeURIComponent(url)}&w=64&q=75`

before(async () => {
  upstream = await startUpstream()
  sidecar = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port, { maximumResponseBody: 1_000_000 }), upstreamTimeoutMs: 800 })
})
after(async () => {
  await sidecar.close()
  await upstream.close()
})

async function expectWithin(path: string, status: number, body: string, ms: number) {
  const started = Date.now()
  const res = await request(sidecar.app).get(path)
  const took = Date.now() - started
  assert.equal(res.status, status)
  assert.equal(res.text, body)
  assert.ok(took < ms, `took ${took} ms`)
  // The upstream side of the exchange is closed, not left hanging.
  for (let i = 0; i < 40 && (await upstream.connections()) > 0; i++) await sleep(50)
  assert.equal(await upstream.connections(), 0)
}

describe('external upstream faults', () => {
  const ext = (p: string) => image(`${upstream.url}${p}`)
  test('no headers at all → 504 at the timeout', () => expectWithin(ext('/hang'), 504, '"url" parameter is valid but upstream response timed out', 3000))
  test('a body that stalls mid-stream → 504 at the timeout', () => expectWithin(ext('/fault/stall'), 504, '"url" parameter is valid but upstream response timed out', 3000))
  test('a connection reset mid-body → 500, as Next', () => expectWithin(ext('/fault/reset'), 500, 'Internal Server Error', 3000))
  test('a Content-Length that lies (connection closes early) → 500, as Next', () => expectWithin(ext('/fault/short'), 500, 'Internal Server Error', 3000))
  test('an endless body → 413 once it passes maximumResponseBody', () => expectWithin(ext('/fault/endless'), 413, '"url" parameter is valid but upstream response is invalid', 3000))
})

describe('internal (frontend) faults', () => {
  test('a body that stalls → 504 at the timeout', () => expectWithin(image('/fault/stall'), 504, '"url" parameter is valid but upstream response timed out', 3000))
  test('a connection reset mid-body → 500 upstream invalid, as Next', () => expectWithin(image('/fault/reset'), 500, '"url" parameter is valid but upstream response is invalid', 3000))
  test('an endless body → 413', () => expectWithin(image('/fault/endless'), 413, '"url" parameter is valid but internal response is invalid', 3000))
})
