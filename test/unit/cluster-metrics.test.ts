/**
 * The cluster primary's view of its workers' metrics: each series aggregated as it means, from the
 * workers' real prom-client registries (the sidecar's own metric set).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { aggregateClusterMetrics } from '../../sidecar/runtime/cluster.js'
import { createMetrics } from '../../sidecar/runtime/metrics.js'
import { metric } from '../helpers/metrics.js'

async function twoWorkers(set: (worker: ReturnType<typeof createMetrics>, index: number) => void): Promise<string> {
  const workers = [createMetrics(), createMetrics()]
  workers.forEach(set)
  const perWorker = await Promise.all(workers.map(async (w, index) => ({ worker: index, metrics: await w.registry.getMetricsAsJSON() })))
  return aggregateClusterMetrics(perWorker).metrics()
}

test('the store is up only while every worker’s store answers (min, not the sum)', async () => {
  const up = await twoWorkers((w) => w.storeUp.set({ op: 'write' }, 1))
  assert.equal(metric(up, 'next_image_sidecar_cache_store_up', { op: 'write' }), 1)
  const oneDown = await twoWorkers((w, i) => w.storeUp.set({ op: 'write' }, i === 0 ? 1 : 0))
  assert.equal(metric(oneDown, 'next_image_sidecar_cache_store_up', { op: 'write' }), 0)
})

test('each worker’s start time is kept, labelled with its worker index', async () => {
  const text = await twoWorkers(() => {})
  const zero = metric(text, 'next_image_sidecar_process_start_time_seconds', { worker: '0' })
  const one = metric(text, 'next_image_sidecar_process_start_time_seconds', { worker: '1' })
  assert.ok(zero > 1.6e9 && one > 1.6e9)
})

test('counters and per-worker shares add up; container-wide limits are shown once', async () => {
  const text = await twoWorkers((w) => {
    w.transforms.inc(3)
    w.queueDepth.set(2)
    w.queueCapacity.set(64)
    w.limitMemory.set(1024)
  })
  assert.equal(metric(text, 'next_image_sidecar_transforms_total'), 6)
  assert.equal(metric(text, 'next_image_sidecar_queue_depth'), 4)
  assert.equal(metric(text, 'next_image_sidecar_queue_capacity'), 128)
  assert.equal(metric(text, 'next_image_sidecar_limit_memory_bytes'), 1024)
})

test('event-loop lag percentiles show the worst worker, not the average', async () => {
  const workers = [createMetrics(), createMetrics()]
  const perWorker = await Promise.all(workers.map(async (w, index) => ({ worker: index, metrics: await w.registry.getMetricsAsJSON() })))
  // A saturated worker beside an idle one: the values a real lag monitor would report.
  for (const [index, lag] of [0.01, 0.5].entries()) {
    const p99 = perWorker[index]!.metrics.find((m) => m.name === 'next_image_sidecar_nodejs_eventloop_lag_p99_seconds')!
    p99.values = [{ value: lag, labels: {} }]
  }
  assert.equal(metric(await aggregateClusterMetrics(perWorker).metrics(), 'next_image_sidecar_nodejs_eventloop_lag_p99_seconds'), 0.5)
})
