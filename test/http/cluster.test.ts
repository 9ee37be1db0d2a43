/** `--workers N`: several processes share one port, one SQLite file and one single flight. */
import { test, before, after, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { freePort } from '../helpers/next-app.js'
import { CLI, stopChild } from '../helpers/cli.js'
import { metric } from '../helpers/metrics.js'
import { image } from '../helpers/image-url.js'
import { waitUntil } from '../helpers/wait.js'

let upstream: UpstreamServer

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

interface Cluster {
  url: string
  child: ChildProcess
  /** Every JSON log line so far (request lines included: misses at info, HITs at debug). */
  lines: Array<Record<string, unknown>>
  /** Resolves when a log line matching `pick` arrives (or has arrived). */
  waitForLine(pick: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
}

/** `logLevel` debug: a HIT's request line too (info logs misses only). */
async function startCluster(args: string[], logLevel: 'info' | 'debug' = 'info'): Promise<Cluster> {
  const port = await freePort()
  const child = spawn(process.execPath, [CLI, '--host', '127.0.0.1', '--port', String(port), '--frontend', upstream.url, ...args], {
    env: { ...process.env, LOG_LEVEL: logLevel },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const lines: Array<Record<string, unknown>> = []
  const waiters: Array<{ pick: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }> = []
  createInterface({ input: child.stdout! }).on('line', (text) => {
    const line = JSON.parse(text) as Record<string, unknown>
    lines.push(line)
    for (const w of [...waiters]) if (w.pick(line)) waiters.splice(waiters.indexOf(w), 1), w.resolve(line)
  })
  const waitForLine = (pick: (l: Record<string, unknown>) => boolean) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const seen = lines.find(pick)
      if (seen) resolve(seen)
      else waiters.push({ pick, resolve })
    })
  const url = `http://127.0.0.1:${port}`
  return { url, child, lines, waitForLine }
}

const listening = (l: Record<string, unknown>) => l.msg === 'next-image-sidecar listening'

function allListening(c: Cluster, workers: number): Promise<void> {
  return waitUntil(() => c.lines.filter(listening).length >= workers, `${workers} workers listening`, 30_000)
}

async function stop(c: Cluster): Promise<number | null> {
  return (await stopChild(c.child)).code
}

test('two workers answer a herd of identical cold requests with one transform and one upstream fetch', async () => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-cluster-')), 'cache.sqlite')}`
  // Debug: a worker whose share of the herd arrived after the other stored the image answers HITs, logged at debug.
  const c = await startCluster(['--workers', '2', '--cache', cache], 'debug')
  await allListening(c, 2)
  const path = image('/corpus/large/elephants-3840x2160.jpg', 3840, 75)
  const fetchedBefore = upstream.requests.filter((r) => r.url === '/corpus/large/elephants-3840x2160.jpg').length
  // Separate connections, so the primary hands them to both workers.
  const responses = await Promise.all(
    Array.from({ length: 24 }, () => fetch(`${c.url}${path}`, { headers: { accept: 'image/webp', connection: 'close' } }).then(async (r) => ({ status: r.status, etag: r.headers.get('etag'), bytes: (await r.arrayBuffer()).byteLength }))),
  )
  for (const r of responses) assert.equal(r.status, 200)
  assert.equal(new Set(responses.map((r) => r.etag)).size, 1)
  const servedBy = new Set(c.lines.filter((l) => l.msg === 'request' && l.url === path).map((l) => l.pid))
  assert.equal(servedBy.size, 2, 'both workers took part in the herd')
  const text = await (await fetch(`${c.url}/metrics`)).text()
  assert.equal(metric(text, 'next_image_sidecar_transforms_total'), 1)
  assert.equal(upstream.requests.filter((r) => r.url === '/corpus/large/elephants-3840x2160.jpg').length - fetchedBefore, 1)
  assert.equal(await stop(c), 0)
})

test('/metrics sums every worker: the cache counters add up to all requests served', async () => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-cluster-')), 'cache.sqlite')}`
  const c = await startCluster(['--workers', '2', '--cache', cache])
  await allListening(c, 2)
  const path = image('/corpus/png/chelsea.png', 64)
  for (let i = 0; i < 12; i++) {
    const res = await fetch(`${c.url}${path}`, { headers: { accept: 'image/webp', connection: 'close' } })
    assert.equal(res.status, 200)
    await res.arrayBuffer()
  }
  const text = await (await fetch(`${c.url}/metrics`)).text()
  assert.equal(metric(text, 'next_image_sidecar_cache_requests_total'), 12)
  assert.equal(metric(text, 'next_image_sidecar_cache_requests_total', { result: 'miss' }), 1)
  assert.equal(metric(text, 'next_image_sidecar_transforms_total'), 1, 'the other worker read the entry from the shared SQLite file')
  assert.equal(await stop(c), 0)
})

test('with --metrics-port, every worker answers there with the sum, and the image port has no /metrics', async () => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-cluster-')), 'cache.sqlite')}`
  const metricsPort = await freePort()
  const c = await startCluster(['--workers', '2', '--cache', cache, '--metrics-port', String(metricsPort)])
  await allListening(c, 2)
  for (let i = 0; i < 6; i++) {
    const res = await fetch(`${c.url}${image('/corpus/png/chelsea.png', 64)}`, { headers: { accept: 'image/webp', connection: 'close' } })
    await res.arrayBuffer()
  }
  assert.equal((await fetch(`${c.url}/metrics`, { headers: { connection: 'close' } })).status, 404)
  // Asked several times on fresh connections: whichever worker answers gives the cluster's sum.
  for (let i = 0; i < 4; i++) {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { headers: { connection: 'close' } })).text()
    assert.equal(metric(text, 'next_image_sidecar_cache_requests_total'), 6)
  }
  assert.equal(await stop(c), 0)
})

/** Stops the cluster when the test ends, also when an assertion failed on the way. */
function stopAfter(t: TestContext, c: Cluster): void {
  t.after(() => void (c.child.exitCode === null && c.child.signalCode === null && c.child.kill('SIGTERM')))
}

test('/metrics aggregates each gauge as it means: the store is up once (not twice), each worker keeps its start time', async (t) => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-cluster-')), 'cache.sqlite')}`
  const c = await startCluster(['--workers', '2', '--cache', cache])
  stopAfter(t, c)
  await allListening(c, 2)
  const text = await (await fetch(`${c.url}/metrics`)).text()
  for (const op of ['read', 'write']) assert.equal(metric(text, 'next_image_sidecar_cache_store_up', { op }), 1, op)
  for (const worker of ['0', '1']) assert.ok(metric(text, 'next_image_sidecar_process_start_time_seconds', { worker }) > 1.6e9, `worker ${worker}'s start time`)
  assert.equal(await stop(c), 0)
})

test('a replaced worker shows in /metrics as a new start time under its worker label', async (t) => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-cluster-')), 'cache.sqlite')}`
  const c = await startCluster(['--workers', '2', '--cache', cache])
  stopAfter(t, c)
  await allListening(c, 2)
  const startOf = async (worker: string) => metric(await (await fetch(`${c.url}/metrics`, { headers: { connection: 'close' } })).text(), 'next_image_sidecar_process_start_time_seconds', { worker })
  const before = await startOf('0')
  const victim = c.lines.find((l) => listening(l) && l.worker === 0)!.pid as number
  process.kill(victim, 'SIGKILL')
  await waitUntil(() => c.lines.some((l) => listening(l) && l.worker === 0 && l.pid !== victim), 'worker 0 to be replaced', 30_000)
  // prom-client rounds the start time to the second: wait for the clock to pass it rather than assume.
  await waitUntil(async () => (await startOf('0')) > before, 'worker 0 to report its new start time', 10_000, 200)
  assert.equal(await stop(c), 0)
})

test('a worker that crashes is replaced and the port keeps answering', async () => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-cluster-')), 'cache.sqlite')}`
  const c = await startCluster(['--workers', '2', '--cache', cache])
  await allListening(c, 2)
  const victim = c.lines.find(listening)!.pid as number
  process.kill(victim, 'SIGKILL')
  await c.waitForLine((l) => l.msg === 'a worker exited; replacing it')
  for (let i = 0; i < 6; i++) assert.equal((await fetch(`${c.url}/healthz`, { headers: { connection: 'close' } })).status, 200)
  await c.waitForLine((l) => listening(l) && l.pid !== victim && c.lines.filter(listening).indexOf(l) >= 2)
  const res = await fetch(`${c.url}${image('/corpus/png/chelsea.png', 64)}`, { headers: { accept: 'image/webp' } })
  assert.equal(res.status, 200)
  assert.equal(await stop(c), 0)
})

test('SIGTERM drains every worker, in-flight requests complete, and the primary exits 0', async () => {
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-cluster-')), 'cache.sqlite')}`
  const c = await startCluster(['--workers', '2', '--cache', cache, '--concurrency', '1'])
  await allListening(c, 2)
  const files = ['photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/aqua.jpg', 'photo-jpeg/ladybird.jpg']
  const inFlight = files.map((f) =>
    fetch(`${c.url}${image(`/corpus/${f}`, 1920)}`, { headers: { accept: 'image/webp', connection: 'close' } }).then(async (r) => ({ status: r.status, bytes: (await r.arrayBuffer()).byteLength })),
  )
  // Stop while the jobs are running: their sources have reached the workers.
  await waitUntil(() => upstream.requests.filter((r) => files.some((f) => r.url === `/corpus/${f}`)).length >= 2, 'jobs in flight on the workers')
  const code = stop(c)
  for (const r of await Promise.all(inFlight)) {
    assert.equal(r.status, 200)
    assert.ok(r.bytes > 0)
  }
  assert.equal(await code, 0)
  const pids = c.lines.filter(listening).map((l) => l.pid as number)
  for (const pid of pids) assert.throws(() => process.kill(pid, 0), /ESRCH/, `worker ${pid} is gone`)
  await assert.rejects(fetch(`${c.url}/healthz`))
})

test('memory:// with --workers > 1 is refused at start, since each process would cache alone', async () => {
  const port = await freePort()
  const child = spawn(process.execPath, [CLI, '--port', String(port), '--frontend', upstream.url, '--workers', '2', '--cache', 'memory://'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk))
  const [code] = await once(child, 'exit')
  assert.equal(code, 1)
  assert.match(stderr, /memory:\/\/ is private to each process/)
})

test('a worker that cannot start stops the cluster with exit code 1 instead of restarting forever', async () => {
  const port = await freePort()
  // The port is taken, so every worker fails to listen.
  const blocker = spawn(process.execPath, ['-e', `require('node:http').createServer().listen(${port}, '127.0.0.1', () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'ignore'] })
  await once(blocker.stdout!, 'data')
  const child = spawn(process.execPath, [CLI, '--host', '127.0.0.1', '--port', String(port), '--frontend', upstream.url, '--workers', '2', '--cache', `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-cluster-')), 'c.sqlite')}`], {
    env: { ...process.env, LOG_LEVEL: 'silent' },
    stdio: 'ignore',
  })
  const [code] = await once(child, 'exit')
  blocker.kill()
  assert.equal(code, 1)
})
