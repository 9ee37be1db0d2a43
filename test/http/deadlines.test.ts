/**
 * Every wait ends at its deadline, also when garbage collection runs while it waits: the real CLI
 * runs with a full GC every 20 ms (test/helpers/gc-pressure.mjs), against slow, stalled and
 * trickling upstreams and lock holders that stall.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { startCli } from '../helpers/cli.js'
import { REPO } from '../helpers/next-app.js'
import { PrivateRedis } from '../helpers/redis.js'
import { image } from '../helpers/image-url.js'
import { localRemoteConfig } from '../helpers/sidecar.js'
import { waitUntil } from '../helpers/wait.js'

const GC_PRESSURE = ['--expose-gc', '--import', pathToFileURL(join(REPO, 'test/helpers/gc-pressure.mjs')).href]
const TIMED_OUT = '"url" parameter is valid but upstream response timed out'

let upstream: UpstreamServer
let configPath: string
const children: ChildProcess[] = []

before(async () => {
  upstream = await startUpstream()
  configPath = join(mkdtempSync(join(tmpdir(), 'nis-deadlines-')), 'next.config.mjs')
  writeFileSync(configPath, `export default ${JSON.stringify(localRemoteConfig(upstream.port))}`)
})
after(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL')
  await upstream.close()
})

/** The CLI under GC pressure, with one transform slot and no retries (Next's statuses). */
async function startUnderGc(args: string[]): Promise<{ url: string; child: ChildProcess }> {
  const started = await startCli(
    ['--frontend', upstream.url, '--config', configPath, '--cache', 'memory://', '--concurrency', '1', '--max-attempts', '1', ...args],
    {},
    GC_PRESSURE,
  )
  children.push(started.child)
  return started
}
const sidecarUnderGc = async (args: string[]): Promise<string> => (await startUnderGc(args)).url

/**
 * One such sidecar for the enclosing describe: started before its tests, stopped after them (a GC-pressure
 * process left running loads the describes that follow).
 */
function describedSidecar(args: string[]): { url: string } {
  const sidecar = { url: '' }
  let child: ChildProcess | undefined
  before(async () => {
    const started = await startUnderGc(args)
    sidecar.url = started.url
    child = started.child
  })
  after(() => void child?.kill('SIGKILL'))
  return sidecar
}

interface Timed {
  status: number
  text: string
  retryAfter: string | null
  ms: number
  /** performance.now() when the body had arrived. */
  endedAt: number
}
async function timedGet(url: string): Promise<Timed> {
  const started = performance.now()
  const res = await fetch(url, { headers: { accept: 'image/webp' }, signal: AbortSignal.timeout(30_000) })
  const text = await res.text()
  const endedAt = performance.now()
  return { status: res.status, text, retryAfter: res.headers.get('retry-after'), ms: endedAt - started, endedAt }
}

/** Ended at `deadlineMs` (not before, and well before the slow peer would have answered). */
function endedAtDeadline(r: Timed, deadlineMs: number): void {
  assert.ok(r.ms >= deadlineMs - 50, `ended after ${Math.round(r.ms)} ms, before its ${deadlineMs} ms deadline`)
  assert.ok(r.ms < deadlineMs + 2000, `ended after ${Math.round(r.ms)} ms, long past its ${deadlineMs} ms deadline`)
}

describe('the upstream timeout under GC pressure (upstream timeout 1 s)', () => {
  const sidecar = describedSidecar(['--upstream-timeout', '1000', '--timeout', '20000'])

  test('an external upstream whose headers come after 5 s → 504 at 1 s, not its late 200', async () => {
    const r = await timedGet(`${sidecar.url}${image(`${upstream.url}/slow/5000/png/chelsea.png`, 64)}`)
    assert.equal(r.status, 504)
    assert.equal(r.text, TIMED_OUT)
    endedAtDeadline(r, 1000)
  })
  test('an external body trickling a byte every 100 ms → 504 at 1 s', async () => {
    const r = await timedGet(`${sidecar.url}${image(`${upstream.url}/trickle/png/chelsea.png`, 64)}`)
    assert.equal(r.status, 504)
    assert.equal(r.text, TIMED_OUT)
    endedAtDeadline(r, 1000)
  })
  test('a frontend whose headers come after 5 s → 504 at 1 s', async () => {
    const r = await timedGet(`${sidecar.url}${image('/slow/5000/png/coffee.png', 64)}`)
    assert.equal(r.status, 504)
    assert.equal(r.text, TIMED_OUT)
    endedAtDeadline(r, 1000)
  })
  test('each redirect hop has its own 1 s, as in Next: a slow hop after a redirect still ends at 1 s', async () => {
    const to = encodeURIComponent('/slow/5000/png/silk.png')
    const r = await timedGet(`${sidecar.url}${image(`${upstream.url}/redirect/1?to=${to}`, 64)}`)
    assert.equal(r.status, 504)
    endedAtDeadline(r, 1000)
  })
})

describe('stalled upstreams and the one transform slot under GC pressure (upstream timeout 5 s)', () => {
  // Its own sidecar with a wider upstream timeout: the good image must be served while the stalled ones
  // wait, and a 1 s wait left a loaded machine a few hundred ms for that (the order, not a speed, is the claim).
  const sidecar = describedSidecar(['--upstream-timeout', '5000', '--timeout', '20000'])

  test('stalled upstreams hold no image slot: eight at once all end at 5 s, and a good image is served meanwhile', async () => {
    const stalled = Promise.all([64, 96, 128, 256, 384, 640, 750, 828].map((w) => timedGet(`${sidecar.url}${image(`${upstream.url}/hang`, w)}`)))
    const good = await timedGet(`${sidecar.url}${image('/corpus/png/coins-gray.png', 64)}`)
    assert.equal(good.status, 200)
    // Served before any stalled one ended: had they held its slot, it would have come after their 504s.
    const ended = await stalled
    assert.ok(good.endedAt < Math.min(...ended.map((r) => r.endedAt)), `the good image waited ${Math.round(good.ms)} ms, behind the stalled ones`)
    for (const r of ended) {
      assert.deepEqual([r.status, r.text], [504, TIMED_OUT])
      endedAtDeadline(r, 5000)
    }
  })
  test('after the timeouts the one transform slot is free: a good image is served, not queued to the job deadline', async () => {
    // A slot still held would queue this request until the 20 s job deadline (504): a 200 well before it is
    // the proof. (A bound of 1 s here measured the machine's load, not the slot.)
    const r = await timedGet(`${sidecar.url}${image('/corpus/png/chelsea.png', 96)}`)
    assert.equal(r.status, 200, r.text)
    assert.ok(r.ms < 10_000, `took ${Math.round(r.ms)} ms: queued behind a slot the timeouts did not free`)
  })
})

describe('the job deadline under GC pressure (job deadline 1.5 s, upstream timeout 20 s)', () => {
  const sidecar = describedSidecar(['--upstream-timeout', '20000', '--timeout', '1500'])

  test('a stalled upstream holds its job only until the job deadline → 504', async () => {
    const r = await timedGet(`${sidecar.url}${image(`${upstream.url}/hang`, 64)}`)
    assert.equal(r.status, 504)
    assert.equal(r.text, TIMED_OUT)
    endedAtDeadline(r, 1500)
  })
  test('identical waiters on a stalled job all end at its deadline with Next’s 504', async () => {
    const url = `${sidecar.url}${image(`${upstream.url}/hang`, 128)}`
    const results = await Promise.all(Array.from({ length: 6 }, () => timedGet(url)))
    for (const r of results) {
      assert.equal(r.status, 504)
      assert.equal(r.text, TIMED_OUT)
      endedAtDeadline(r, 1500)
    }
  })
  test('more stalled jobs than slots: each request ends at its own deadline (504, or 503 + Retry-After if still in line)', async () => {
    // One transform slot admits two jobs (fetch-ahead); the third waits in line.
    const results = await Promise.all([256, 384, 640].map((w) => timedGet(`${sidecar.url}${image(`${upstream.url}/hang`, w)}`)))
    for (const r of results) {
      if (r.status === 503) assert.equal(r.retryAfter, '1')
      else assert.deepEqual([r.status, r.text], [504, TIMED_OUT])
      endedAtDeadline(r, 1500)
    }
  })
  test('after the deadlines every slot is free: a good image is served within its own deadline', async () => {
    // A slot still held would queue this request until its 1.5 s deadline (504, or 503 if refused early):
    // a 200 is the proof. (A bound of 1 s here measured the machine's load: 1.2 s with other work running.)
    const r = await timedGet(`${sidecar.url}${image('/corpus/png/coffee.png', 96)}`)
    assert.equal(r.status, 200, r.text)
  })
})

test('a replica waiting on another replica’s stalled lock ends at its own deadline (Redis, GC pressure)', async () => {
  const redis = await PrivateRedis.start()
  try {
    const args = ['--cache', redis.url, '--upstream-timeout', '20000', '--timeout', '3000']
    const [holder, waiter] = await Promise.all([sidecarUnderGc(args), sidecarUnderGc(args)])
    const path = image(`${upstream.url}/hang`, 64)
    const holding = timedGet(`${holder}${path}`)
    // The holder has the lock once its fetch reached the upstream.
    const seen = upstream.requests.length
    await waitUntil(() => upstream.requests.slice(seen).some((r) => r.url === '/hang'), 'the holder to reach the stalled upstream')
    const waiting = await timedGet(`${waiter}${path}`)
    assert.equal(waiting.status, 504, waiting.text)
    assert.equal(waiting.text, TIMED_OUT)
    endedAtDeadline(waiting, 3000)
    assert.equal((await holding).status, 504)
  } finally {
    await redis.kill()
  }
})
