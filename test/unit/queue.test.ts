/** The work queue's slots and waiting line, driven by promises and signals the test controls. */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Slots, WorkQueue } from '../../sidecar/queue.js'
import { ImageError } from '../../sidecar/errors.js'
import { createMetrics } from '../../sidecar/metrics.js'

/** A job that runs until the test ends it. */
function held() {
  let end!: () => void
  const ended = new Promise<void>((resolve) => (end = resolve))
  return { job: () => ended, end }
}

test('a job still in line when its deadline passes is refused with 503 + Retry-After and leaves the line', async () => {
  const queue = new WorkQueue(1, 10, createMetrics())
  const a = held()
  const b = held()
  const running = [queue.job(new AbortController().signal, a.job), queue.job(new AbortController().signal, b.job)]
  const deadline = new AbortController()
  let ran = false
  const waiting = queue.job(deadline.signal, async () => void (ran = true))
  assert.equal(queue.waiting, 1)
  deadline.abort(new Error('deadline'))
  await assert.rejects(waiting, (err: unknown) => err instanceof ImageError && err.statusCode === 503 && err.headers['Retry-After'] === '1')
  assert.equal(queue.waiting, 0)
  a.end()
  b.end()
  await Promise.all(running)
  assert.equal(ran, false)
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
  const jobs = [held(), held(), held()]
  const admitted = jobs.map((j) => queue.job(new AbortController().signal, j.job))
  await assert.rejects(queue.job(new AbortController().signal, async () => undefined), (err: unknown) => err instanceof ImageError && err.statusCode === 503)
  for (const j of jobs) j.end()
  await Promise.all(admitted)
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
