/**
 * A presigned source URL is a bearer credential until it expires: its signature (and credential)
 * must not reach the access log, the 'image request rejected/failed' lines, or a span. Found by
 * review: X-Amz-Signature and X-Amz-Credential were logged with the source's query.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import request from 'supertest'
import { startTracing } from '../../sidecar/runtime/tracing.js'
import { signImageParams } from '../../sidecar/server/signature.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import { corpusFile } from '../helpers/upstream-server.js'
import { image } from '../helpers/image-url.js'

const SIGNATURE = 'f00dfacecafe0123456789abcdef'
const CREDENTIAL = 'AKIAEXAMPLESECRET%2F20260101%2Fus-east-1%2Fs3%2Faws4_request'
const SECRETS = [SIGNATURE, 'AKIAEXAMPLESECRET', 'tokensecret']

let origin: Server
let port: number
let receiver: Server
const spans: string[] = []
before(async () => {
  // A private bucket: an object for a presigned request, a 500 for a broken one, no image at all for another.
  origin = createServer((req, res) => {
    if (req.url!.startsWith('/ok/')) return void res.writeHead(200, { 'content-type': 'image/jpeg' }).end(corpusFile('photo-jpeg/rocket.jpg'))
    if (req.url!.startsWith('/text/')) return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html>')
    res.writeHead(500).end('broken')
  }).listen(0, '127.0.0.1')
  await once(origin, 'listening')
  port = (origin.address() as AddressInfo).port
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      spans.push(Buffer.concat(chunks).toString())
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  }).listen(0, '127.0.0.1')
  await once(receiver, 'listening')
})
after(() => {
  origin.close()
  receiver.close()
})

const presigned = (path: string) => `http://127.0.0.1:${port}${path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${CREDENTIAL}&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=${SIGNATURE}&token=tokensecret&v=3`

test('the access log, the rejected/failed lines and the spans name the object but not its signature', async () => {
  const lines: string[] = []
  const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) })
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`
  process.env.OTEL_BSP_SCHEDULE_DELAY = '50'
  const tracing = await startTracing(pino({ level: 'silent' }), process.env)
  assert.ok(tracing, 'tracing on')
  const s = testSidecar({ frontend: 'http://127.0.0.1:9', nextConfig: localRemoteConfig(port), logger: pino({ level: 'debug' }, sink) })
  try {
    const traced = { traceparent: `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-01`, accept: 'image/webp' }
    assert.equal((await request(s.app).get(image(presigned('/ok/a.jpg'), 640)).set(traced)).status, 200)
    assert.equal((await request(s.app).get(image(presigned('/broken/a.jpg'), 640)).set(traced)).status, 500)
    assert.equal((await request(s.app).get(image(presigned('/text/a.jpg'), 640)).set(traced)).status, 400)
    assert.equal((await request(s.app).get(image(presigned('/ok/a.jpg').replace('127.0.0.1', 'localhost'), 640)).set(traced)).status, 400)
  } finally {
    await s.close()
    await tracing.shutdown()
  }
  const log = lines.join('')
  for (const message of ['"msg":"request"', '"msg":"image request failed"', '"msg":"image request rejected"']) assert.ok(log.includes(message), message)
  const exported = spans.join('')
  assert.ok(exported.includes('url.full'), 'the upstream fetch spans were exported')
  for (const [where, text] of [['log', log], ['spans', exported]] as const) {
    for (const secret of SECRETS) assert.ok(!text.includes(secret), `${secret} in the ${where}:\n${text.split('\n').filter((l) => l.includes(secret)).join('\n').slice(0, 2000)}`)
    assert.match(text, /X-Amz-Signature(=|%3D)REDACTED/, `${where} names the parameter`)
    assert.match(text, /(\/|%2F)ok(\/|%2F)a\.jpg/, `${where} still names the object`)
    assert.match(text, /X-Amz-Date(=|%3D)20260101T000000Z/, `${where} keeps what is no secret`)
  }
})

test('a signed optimizer URL: the access log hides its s', async () => {
  const lines: string[] = []
  const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) })
  const s = testSidecar({ frontend: 'http://127.0.0.1:9', nextConfig: localRemoteConfig(port), logger: pino({ level: 'debug' }, sink), signingKey: 'k1' })
  try {
    const url = `http://127.0.0.1:${port}/ok/b.jpg`
    const sig = signImageParams('k1', url, '640', '75')
    assert.equal((await request(s.app).get(`${image(url, 640)}&s=${sig}`).set('Accept', 'image/webp')).status, 200)
    assert.ok(!lines.join('').includes(sig), 'the signature is not logged')
    assert.match(lines.join(''), /&s=REDACTED/)
  } finally {
    await s.close()
  }
})
