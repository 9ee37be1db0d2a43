/** Operations: graceful shutdown of the CLI under load, and one log line per request. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import request from 'supertest'
import { pino } from 'pino'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { freePort } from '../helpers/next-app.js'
import { CLI, startCli } from '../helpers/cli.js'
import { testSidecar } from '../helpers/sidecar.js'
import { image } from '../helpers/image-url.js'
import { waitUntil } from '../helpers/wait.js'

let upstream: UpstreamServer

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

test('SIGTERM during load: unready first, every in-flight request completes, also one still running when the listener closes, exit 0', async () => {
  const { url, child } = await startCli(['--frontend', upstream.url, '--cache', 'memory://', '--concurrency', '1'], { SHUTDOWN_DELAY_MS: '2000' })
  const exited = once(child, 'exit')
  const files = ['photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/aqua.jpg', 'photo-jpeg/ladybird.jpg', 'photo-jpeg/green-meadow.jpg', 'large/elephants-3840x2160.jpg']
  const get = (src: string) => fetch(`${url}${image(src, 1920)}`, { headers: { accept: 'image/webp' } }).then(async (r) => ({ status: r.status, bytes: (await r.arrayBuffer()).byteLength, endedAt: performance.now() }))
  const inFlight = files.map((f) => get(`/corpus/${f}`))
  // Its source arrives 4 s after it is asked for: past the 2 s shutdown delay, whatever this machine's speed.
  const draining = get('/slow/4000/png/coffee.png')
  // Stop while the jobs are running: the first sources have reached the sidecar.
  await waitUntil(() => upstream.requests.filter((r) => files.some((f) => r.url === `/corpus/${f}`)).length >= 1, 'jobs in flight')
  child.kill('SIGTERM')
  // Unready within the shutdown delay, while it still accepts connections (2 s: a delay of 300 ms left a
  // loaded machine, both cores transforming, few polls to see the 503 before the listener closed).
  await waitUntil(async () => (await fetch(`${url}/readyz`)).status === 503, '/readyz to answer 503 after SIGTERM', 5000)
  await waitUntil(() => fetch(`${url}/healthz`).then(() => false, () => true), 'the listener to close', 10_000)
  const closedAt = performance.now()
  const results = await Promise.all(inFlight)
  for (const r of results) {
    assert.equal(r.status, 200)
    assert.ok(r.bytes > 0)
  }
  const last = await draining
  assert.equal(last.status, 200)
  assert.ok(last.bytes > 0)
  assert.ok(last.endedAt > closedAt, 'the slow request was not in flight when the listener closed')
  const [code] = await exited
  assert.equal(code, 0)
  await assert.rejects(fetch(`${url}/healthz`))
})

test('each request is logged once with its id, status, cache result, bytes and duration', async () => {
  const lines: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) })
  const s = testSidecar({ frontend: upstream.url, logger })
  const res = await request(s.app).get(image('/corpus/png/chelsea.png', 64)).set('Accept', 'image/webp').set('X-Request-Id', 'abc-123')
  assert.equal(res.headers['x-request-id'], 'abc-123')
  const generated = await request(s.app).get('/healthz')
  assert.match(generated.headers['x-request-id']!, /^[0-9a-f-]{36}$/)
  const line = lines.find((l) => l.msg === 'request' && l.reqId === 'abc-123')!
  assert.equal(line.status, 200)
  assert.equal(line.cache, 'MISS')
  assert.equal(line.bytes, Number(res.headers['content-length']))
  assert.equal(typeof line.ms, 'number')
  assert.equal(lines.filter((l) => l.reqId === 'abc-123').length, 1)
  await s.close()
})

test('an unsafe X-Request-Id is replaced, not echoed', async () => {
  const s = testSidecar({ frontend: upstream.url })
  const res = await request(s.app).get('/healthz').set('X-Request-Id', 'a b<script>')
  assert.match(res.headers['x-request-id']!, /^[0-9a-f-]{36}$/)
  await s.close()
})

test('the CLI refuses an invalid next.config at start, naming the key', async () => {
  const port = await freePort()
  const config = join(mkdtempSync(join(tmpdir(), 'nis-bad-config-')), 'next.config.mjs')
  writeFileSync(config, 'export default { images: { deviceSizes: [640, 20000] } }')
  const child = spawn(process.execPath, [CLI, '--port', String(port), '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => (stderr += c))
  const [code] = await once(child, 'exit')
  assert.equal(code, 1)
  assert.match(stderr, /images\.deviceSizes\[1\]: .*10000/)
})

test('a corrupt SQLite file at start: the sidecar says so and serves without it (ready: it can serve)', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'nis-corrupt-')), 'cache.sqlite')
  writeFileSync(path, Buffer.alloc(8192, 0x5a))
  const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${path}` })
  assert.equal((await request(s.app).get(image('/corpus/png/chelsea.png', 64)).set('Accept', 'image/webp')).status, 200)
  const ready = await request(s.app).get('/readyz')
  assert.equal(ready.status, 200)
  assert.match(ready.text, /cache store failing/)
  await s.close()
})

test('--cache-strict refuses to start on a corrupt SQLite file, with the reason', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'nis-corrupt-')), 'cache.sqlite')
  writeFileSync(path, Buffer.alloc(8192, 0x5a))
  const child = spawn(process.execPath, [CLI, '--port', String(await freePort()), '--cache', `sqlite://${path}`, '--cache-strict'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => (stderr += c))
  const [code] = await once(child, 'exit')
  assert.equal(code, 1)
  assert.match(stderr, /--cache-strict: the cache store sqlite:\/\/.* is unusable: .*(not a database|malformed)/)
})
