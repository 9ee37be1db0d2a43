/** The work queue's slots and waiting line, driven by promises and signals the test controls. */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Slots, WorkQueue } from '../../sidecar/runtime/queue.js'
import { ImageError } from '../../sidecar/errors.js'
import { createMetrics } from '../../sidecar/runtime/metrics.js'
import { Deadline } from '../../sidecar/runtime/deadline.js'

/** A job that runs until the test ends it. */
function held() {
  let end!: () => void
  const ended = new Promise<void>((resolve) => (end = resolve))
  return { job: () => ended, end }
}

/** Admits `count` jobs that run until ended (with one transform slot, 32 jobs may be in flight at once). */
function fill(queue: WorkQueue, count: number) {
  const jobs = Array.from({ length: count }, () => held())
  const running = jobs.map((j) => queue.job(new AbortController().signal, j.job))
  return { end: async () => (jobs.forEach((j) => j.end()), await Promise.all(running)) }
}

test('a job still in line when its deadline passes is refused with 503 + Retry-After and leaves the line', async () => {
  const queue = new WorkQueue(1, 10, createMetrics())
  const running = fill(queue, 32)
  const deadline = new AbortController()
  let ran = false
  const waiting = queue.job(deadline.signal, async () => void (ran = true))
  assert.equal(queue.waiting, 1)
  deadline.abort(new Error('deadline'))
  await assert.rejects(waiting, (err: unknown) => err instanceof ImageError && err.statusCode === 503 && err.headers['Retry-After'] === '1')
  assert.equal(queue.waiting, 0)
  await running.end()
  assert.equal(ran, false)
})

test('jobs waiting on their upstream hold no source slot; bodies are read two per transform slot', async () => {
  const queue = new WorkQueue(1, 10, createMetrics())
  const upstreams = Array.from({ length: 5 }, () => held())
  const admitted: number[] = []
  let reading = 0
  let most = 0
  let started = 0
  const jobs = upstreams.map((upstream, i) =>
    queue.job(new AbortController().signal, async (admission) => {
      started++
      await upstream.job() // the upstream answers when the test says so
      if (!admission.tryAdmit()) await admission.wait()
      most = Math.max(most, ++reading)
      admitted.push(i)
      await new Promise((r) => setImmediate(r))
      reading--
    }),
  )
  // All five requests are in flight at once, holding no source slot while their upstreams are silent.
  while (started < 5) await new Promise((r) => setImmediate(r))
  assert.equal(queue.sourcesHeld, 0)
  for (const u of upstreams) u.end()
  await Promise.all(jobs)
  assert.equal(most, 2)
  assert.deepEqual(admitted.sort(), [0, 1, 2, 3, 4])
  assert.equal(queue.sourcesHeld, 0)
})

test('a freed slot goes to the first in line, not to a newcomer', async () => {
  const slots = new Slots(1)
  await slots.acquire()
  const order: string[] = []
  const first = slots.acquire().then(() => order.push('first'))
  const second = slots.acquire().then(() => order.push('second'))
  slots.release()
  await first
  assert.deepEqual(order, ['first'])
  slots.release()
  await second
  assert.deepEqual(order, ['first', 'second'])
  slots.release()
  assert.equal(slots.running, 0)
})

test('a transform whose caller gave up keeps its slot until it really ends', async () => {
  const queue = new WorkQueue(1, 10, createMetrics())
  const slow = held()
  const deadline = new AbortController()
  let started = false
  const given = queue.job(new AbortController().signal, () => queue.transform(deadline.signal, () => ((started = true), slow.job())))
  while (!started) await new Promise((r) => setImmediate(r))
  deadline.abort(new Error('deadline'))
  await assert.rejects(given, /deadline/)
  // The slot is still taken: the next transform waits until the first one ends.
  let next = false
  const following = queue.job(new AbortController().signal, () => queue.transform(new AbortController().signal, async () => void (next = true)))
  await new Promise((r) => setImmediate(r))
  assert.equal(next, false)
  slow.end()
  await following
  assert.equal(next, true)
})

test('the line is full: the next job is shed at once with 503 + Retry-After', async () => {
  const queue = new WorkQueue(1, 1, createMetrics())
  const running = fill(queue, 33) // 32 in flight, one in line
  await assert.rejects(queue.job(new AbortController().signal, async () => undefined), (err: unknown) => err instanceof ImageError && err.statusCode === 503)
  await running.end()
})

describe('admission by memory', () => {
  const MiB = 1024 ** 2
  const limits = { budgetBytes: 100 * MiB, maxJobBytes: 150 * MiB }
  const signal = () => new AbortController().signal

  test('transforms whose estimates do not fit the budget together run one after the other', async () => {
    const queue = new WorkQueue(4, 10, createMetrics(), limits)
    const first = held()
    const order: string[] = []
    const a = queue.job(signal(), () => queue.transform(signal(), async (admit) => (await admit(60 * MiB), order.push('a start'), await first.job(), order.push('a end'))))
    const b = queue.job(signal(), () => queue.transform(signal(), async (admit) => (await admit(60 * MiB), order.push('b start'))))
    while (order.length === 0) await new Promise((r) => setImmediate(r))
    await new Promise((r) => setImmediate(r))
    assert.deepEqual(order, ['a start'])
    first.end()
    await Promise.all([a, b])
    assert.deepEqual(order, ['a start', 'a end', 'b start'])
  })
  test('transforms that fit together run together', async () => {
    const queue = new WorkQueue(4, 10, createMetrics(), limits)
    const gate = held()
    let running = 0
    let most = 0
    const run = () => queue.job(signal(), () => queue.transform(signal(), async (admit) => (await admit(30 * MiB), running++, (most = Math.max(most, running)), await gate.job(), running--)))
    const all = Promise.all([run(), run(), run()])
    while (most < 3) await new Promise((r) => setImmediate(r))
    gate.end()
    await all
    assert.equal(most, 3)
  })
  test('a transform larger than the budget but within what one image may use runs alone', async () => {
    const queue = new WorkQueue(4, 10, createMetrics(), limits)
    let ran = false
    await queue.job(signal(), () => queue.transform(signal(), async (admit) => (await admit(120 * MiB), (ran = true))))
    assert.equal(ran, true)
  })
  test('a transform larger than what one image may use is refused with 503 + Retry-After, before it decodes', async () => {
    const metrics = createMetrics()
    const queue = new WorkQueue(4, 10, metrics, limits)
    let decoded = false
    const refused = queue.job(signal(), () => queue.transform(signal(), async (admit) => (await admit(200 * MiB), (decoded = true))))
    await assert.rejects(refused, (err: unknown) => err instanceof ImageError && err.statusCode === 503 && err.headers['Retry-After'] === '1' && /200 MiB/.test(String((err as Error).cause)))
    assert.equal(decoded, false)
    assert.equal((await metrics.memoryRefused.get()).values[0]!.value, 1)
  })
})

describe('a wait that cannot end before the deadline', () => {
  /** One job: a source slot, then a transform of `ms` of work (the work itself, not a synchronisation). */
  const job = (queue: WorkQueue, signal: AbortSignal, ms: number) =>
    queue.job(signal, async (admission) => {
      if (!admission.tryAdmit()) await admission.wait()
      await queue.transform(signal, () => new Promise((resolve) => setTimeout(resolve, ms)))
    })

  test('is refused at once, before any work ahead of it ends; jobs that can finish wait and are served', async () => {
    const queue = new WorkQueue(1, 100, createMetrics())
    // The recent pace: three transforms of ~50 ms.
    for (let i = 0; i < 3; i++) await job(queue, new AbortController().signal, 50)
    let finished = 0
    const outcomes: Array<{ ok: true } | { ok: false; message: string; finishedBefore: number; retryAfter: string | undefined }> = []
    // Twenty at once, each with a 400 ms deadline: about eight fit in it (fifty ms each, one at a time).
    await Promise.all(
      Array.from({ length: 20 }, () =>
        Deadline.run(400, undefined, (signal) =>
          job(queue, signal, 50).then(
            () => {
              finished++
              outcomes.push({ ok: true })
            },
            (err: Error) => outcomes.push({ ok: false, message: err.message, finishedBefore: finished, retryAfter: err instanceof ImageError ? err.headers['Retry-After'] : undefined }),
          ),
        ),
      ),
    )
    const early = outcomes.filter((o) => !o.ok && o.message.includes('would not finish before its deadline'))
    assert.ok(early.length > 0, 'no job was refused early')
    for (const o of early) {
      assert.ok(!o.ok && o.finishedBefore === 0, 'refused only after work ahead of it ended')
      assert.ok(!o.ok && o.retryAfter === '1')
    }
    assert.ok(outcomes.filter((o) => o.ok).length >= 4, 'jobs that could finish were refused')
  })

  test('before any transform was timed, nobody is refused early', async () => {
    const queue = new WorkQueue(1, 100, createMetrics())
    const outcomes = await Promise.all(Array.from({ length: 6 }, () => Deadline.run(2000, undefined, (signal) => job(queue, signal, 10).then(() => 'ok', (err: Error) => err.message))))
    assert.deepEqual(outcomes, Array(6).fill('ok'))
  })
})
