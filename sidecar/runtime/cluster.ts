import cluster, { type Worker } from 'node:cluster'
import { randomUUID } from 'node:crypto'
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue, type Registry } from 'prom-client'
import type { Logger } from 'pino'
import type { Coordinator, Lock, PurgeBroadcast, PurgeMessage, PurgeReach } from './coordinator.js'

/**
 * `--workers N`: N sidecar processes share the listening port (node:cluster), so serving
 * cached images uses every core. The primary serves nothing; it holds what the workers must
 * share: the single-flight locks (so a miss is transformed once across workers, as across
 * replicas with Redis), the Prometheus view summed over workers, and the workers' lifecycle.
 *
 * Messages are plain objects tagged `nis`; everything else on the channel is not ours.
 */
type ToPrimary =
  | { nis: 'acquire'; id: number; key: string; ttlMs: number }
  | { nis: 'release'; key: string; token: string }
  | { nis: 'metrics'; id: number }
  | { nis: 'listening' }
  | { nis: 'collected'; id: number; metrics: WorkerMetrics | null; error?: string }
  | { nis: 'purge'; id: number; selector: PurgeMessage }
  | { nis: 'purged'; id: number }
type ToWorker =
  | { nis: 'reply'; id: number; value: unknown; error?: string }
  | { nis: 'announce'; key: string }
  | { nis: 'collect'; id: number }
  | { nis: 'purge'; id: number; selector: PurgeMessage }

type WorkerMetrics = MetricObjectWithValues<MetricValue<string>>[]

export interface ClusterShare {
  /** This worker's position (0-based) and the number of workers. */
  index: number
  count: number
}

/** The worker's share of the cluster, from the environment the primary set. */
export function workerShare(): ClusterShare | undefined {
  if (!cluster.isWorker) return undefined
  const index = Number(process.env.NIS_WORKER_INDEX)
  const count = Number(process.env.NIS_WORKERS)
  return Number.isInteger(index) && Number.isInteger(count) && count > 1 ? { index, count } : undefined
}

// ------------------------------------------------------------------ worker side
/**
 * How a worker listens on the shared port. On Linux each worker binds the port itself with SO_REUSEPORT
 * (`reusePort`, Node ≥ 22.12) and the kernel spreads new connections over the workers' sockets. Without it
 * node:cluster's default (round robin) has the primary accept every connection and pass it to a worker over
 * IPC: with a new connection per request the primary's relaying cost more CPU than the request itself
 * (bench/workers.mjs, BENCH_CLOSE=1), and `--workers 2` answered fewer requests than one process.
 * Not for port 0 (each worker would get a port of its own), nor when NODE_CLUSTER_SCHED_POLICY is set
 * (`rr` or `none` there keeps node:cluster's own distribution), nor off Linux (SO_REUSEPORT does not
 * spread connections everywhere).
 */
export function workerListenOptions(port: number, env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): { reusePort?: true } {
  // Only in the sidecar's own cluster: an application's node:cluster embedding the sidecar keeps its own.
  if (workerShare() === undefined || port === 0 || platform !== 'linux' || env.NODE_CLUSTER_SCHED_POLICY) return {}
  return { reusePort: true }
}


let nextId = 0
const pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>()
const announced = new Map<string, Set<() => void>>()
let listening = false
let purgeHandler: ((selector: PurgeMessage) => Promise<void>) | undefined

function listen(): void {
  if (listening) return
  listening = true
  process.on('message', (message: ToWorker) => {
    if (message?.nis === 'reply') {
      const call = pending.get(message.id)
      pending.delete(message.id)
      if (message.error) call?.reject(new Error(message.error))
      else call?.resolve(message.value)
    } else if (message?.nis === 'announce') {
      for (const wake of announced.get(message.key) ?? []) wake()
    } else if (message?.nis === 'purge') {
      // Acknowledged even when applying failed: the primary must not wait for a worker that cannot.
      const done = () => process.send!({ nis: 'purged', id: message.id } satisfies ToPrimary)
      void (purgeHandler?.(message.selector) ?? Promise.resolve()).then(done, done)
    }
  })
}

type Question = { nis: 'acquire'; key: string; ttlMs: number } | { nis: 'metrics' } | { nis: 'purge'; selector: PurgeMessage }

function ask<T>(message: Question, timeoutMs = 5000): Promise<T> {
  listen()
  const id = nextId++
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      pending.delete(id)
      reject(new Error(`cluster primary did not answer "${message.nis}"`))
    }, timeoutMs)
    pending.set(id, {
      resolve: (value) => (clearTimeout(timer), resolve(value as T)),
      reject: (err) => (clearTimeout(timer), reject(err)),
    })
    process.send!({ ...message, id })
  })
}

/** Single flight across the workers of one cluster, through the primary's lock table. */
export class IpcCoordinator implements Coordinator {
  async acquire(key: string, ttlMs: number): Promise<Lock | undefined> {
    const token = await ask<string | null>({ nis: 'acquire', key, ttlMs })
    return token ? { key, token } : undefined
  }

  async release(lock: Lock): Promise<void> {
    process.send!({ nis: 'release', key: lock.key, token: lock.token } satisfies ToPrimary)
  }

  waitFor(key: string, maxMs: number): Promise<void> {
    listen()
    return new Promise((resolve) => {
      const waiters = announced.get(key) ?? new Set()
      announced.set(key, waiters)
      const done = () => {
        clearTimeout(timer)
        waiters.delete(done)
        if (waiters.size === 0) announced.delete(key)
        resolve()
      }
      const timer = setTimeout(done, maxMs)
      waiters.add(done)
    })
  }

  async close(): Promise<void> {}
}

/** Purges reach every other worker's hot tier through the primary, which answers once all of them applied it. */
export class IpcPurgeBroadcast implements PurgeBroadcast {
  announcePurge(selector: PurgeMessage): Promise<PurgeReach> {
    return ask<PurgeReach>({ nis: 'purge', selector }, 10_000)
  }

  onPurge(handler: (selector: PurgeMessage) => Promise<void>): void {
    listen()
    purgeHandler = handler
  }
}

/** The cluster's metrics in Prometheus text: every worker's registry, aggregated by the primary. */
export function clusterMetrics(registry: Registry): () => Promise<string> {
  process.on('message', (message: ToWorker) => {
    if (message?.nis !== 'collect') return
    registry.getMetricsAsJSON().then(
      (metrics) => process.send!({ nis: 'collected', id: message.id, metrics } satisfies ToPrimary),
      (err: Error) => process.send!({ nis: 'collected', id: message.id, metrics: null, error: err.message } satisfies ToPrimary),
    )
  })
  return () => ask<string>({ nis: 'metrics' })
}

/**
 * How the primary combines one series across workers, where a plain sum would lie. `perWorker` keeps
 * each worker's series apart under a `worker` label. Anything not named here keeps the aggregator its
 * metric declares (prom-client: a sum, unless the metric says otherwise).
 */
type Aggregation = 'sum' | 'min' | 'max' | 'first' | 'average' | 'perWorker'
const AGGREGATION: Array<[RegExp, Aggregation]> = [
  // Up only while every worker's store answers, so CacheStoreDown fires when one worker loses it.
  [/^next_image_sidecar_cache_store_up$/, 'min'],
  // A start time summed is meaningless, and dropped (prom-client's choice) the Restarting alert never
  // fires: each worker's own, so a replaced worker shows as a change.
  [/^next_image_sidecar_process_start_time_seconds$/, 'perWorker'],
  // One saturated worker is the problem to see; an average would halve it.
  [/^next_image_sidecar_nodejs_eventloop_lag_(seconds|max_seconds|p50_seconds|p90_seconds|p99_seconds)$/, 'max'],
]

/** Pure: the workers' registries (as `getMetricsAsJSON()` gives them) → the cluster's registry. */
export function aggregateClusterMetrics(perWorker: Array<{ worker: number; metrics: WorkerMetrics }>): Registry {
  const prepared = perWorker.map(({ worker, metrics }) =>
    metrics.map((metric) => {
      const how = AGGREGATION.find(([name]) => name.test(metric.name))?.[1]
      if (how === undefined) return metric
      if (how !== 'perWorker') return { ...metric, aggregator: how }
      // Distinct labels are never combined, so a sum keeps each worker's series as it is.
      return { ...metric, aggregator: 'sum' as const, values: metric.values.map((v) => ({ ...v, labels: { ...v.labels, worker: String(worker) } })) }
    }),
  )
  return AggregatorRegistry.aggregate(prepared)
}

/** Tells the primary this worker listens (a worker that dies before that is a start failure). */
export function reportListening(): void {
  if (cluster.isWorker) process.send!({ nis: 'listening' } satisfies ToPrimary)
}

// ------------------------------------------------------------------ primary side

export interface PrimaryOptions {
  workers: number
  log: Logger
  /** How long to wait for the workers to drain after SIGTERM before killing them. */
  shutdownTimeoutMs: number
  /** Pause before replacing a worker that crashed. */
  restartDelayMs?: number
}

/**
 * Runs the primary: forks the workers (each runs this same CLI), replaces a worker that
 * crashes after it started listening, and on SIGTERM/SIGINT passes SIGTERM on, waits for every
 * worker to drain, then exits 0. A worker that dies before listening stops the whole cluster
 * (the same error would kill its replacement), with exit code 1.
 */
export function runPrimary(options: PrimaryOptions): void {
  const { log } = options
  const locks = new Map<string, { token: string; expiresAt: number }>()
  const collecting = new Map<number, (metrics: WorkerMetrics | null) => void>()
  const purging = new Map<number, () => void>()
  let nextPurge = 0
  let nextCollection = 0
  const indexOf = new WeakMap<Worker, number>()
  const started = new WeakSet<Worker>()
  let stopping = false

  const broadcast = (message: ToWorker) => {
    for (const worker of Object.values(cluster.workers ?? {})) if (worker?.isConnected()) worker.send(message)
  }

  const fork = (index: number) => {
    const worker = cluster.fork({ NIS_WORKER_INDEX: String(index), NIS_WORKERS: String(options.workers) })
    indexOf.set(worker, index)
    // A message to a worker whose IPC channel is closing (it is exiting: a drain, a crash) fails with
    // EPIPE as an 'error' event; unhandled, that would take the primary and every other worker down.
    worker.on('error', (err) => log.debug({ err, worker: index }, 'a message to an exiting worker was not delivered'))
    worker.on('message', (message: ToPrimary) => {
      switch (message?.nis) {
        case 'listening':
          started.add(worker)
          return
        case 'acquire': {
          const now = Date.now()
          const held = locks.get(message.key)
          let token: string | null = null
          if (!held || held.expiresAt <= now) {
            token = randomUUID()
            locks.set(message.key, { token, expiresAt: now + message.ttlMs })
          }
          worker.send({ nis: 'reply', id: message.id, value: token } satisfies ToWorker)
          return
        }
        case 'release':
          if (locks.get(message.key)?.token === message.token) locks.delete(message.key)
          broadcast({ nis: 'announce', key: message.key })
          return
        case 'collected':
          collecting.get(message.id)?.(message.metrics)
          return
        case 'purged':
          purging.get(message.id)?.()
          return
        case 'purge': {
          // Every other live worker applies it; the asking worker hears back once they all did (or 5 s passed).
          const others = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && w !== worker && w.isConnected())
          void Promise.all(
            others.map(
              (other) =>
                new Promise<boolean>((resolve) => {
                  const id = nextPurge++
                  const timer = setTimeout(() => (purging.delete(id), resolve(false)), 5000)
                  purging.set(id, () => (clearTimeout(timer), purging.delete(id), resolve(true)))
                  other.send({ nis: 'purge', id, selector: message.selector } satisfies ToWorker)
                }),
            ),
          ).then((applied) => worker.isConnected() && worker.send({ nis: 'reply', id: message.id, value: { applied: applied.filter(Boolean).length, missed: applied.filter((a) => !a).length } satisfies PurgeReach } satisfies ToWorker))
          return
        }
        case 'metrics':
          collectMetrics().then(
            (text) => worker.isConnected() && worker.send({ nis: 'reply', id: message.id, value: text } satisfies ToWorker),
            (err: Error) => worker.isConnected() && worker.send({ nis: 'reply', id: message.id, value: null, error: err.message } satisfies ToWorker),
          )
          return
      }
    })
    worker.on('exit', (code, signal) => {
      // A dead worker's locks expire at their TTL, as a dead replica's do in Redis.
      if (stopping) {
        if (code !== 0) process.exitCode = 1
        return
      }
      if (!started.has(worker)) {
        log.error({ worker: index, code, signal }, 'a worker failed to start; stopping')
        stopping = true
        for (const other of Object.values(cluster.workers ?? {})) other?.process.kill('SIGTERM')
        process.exitCode = 1
        return
      }
      log.error({ worker: index, code, signal }, 'a worker exited; replacing it')
      setTimeout(() => !stopping && fork(index), options.restartDelayMs ?? 1000).unref()
    })
  }

  /** Every live worker's registry, aggregated; a worker that does not answer in 5 s fails the scrape. */
  const collectMetrics = async (): Promise<string> => {
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && w.isConnected())
    const perWorker = await Promise.all(
      workers.map(
        (worker) =>
          new Promise<{ worker: number; metrics: WorkerMetrics }>((resolve, reject) => {
            const id = nextCollection++
            const timer = setTimeout(() => (collecting.delete(id), reject(new Error(`worker ${indexOf.get(worker)} did not send its metrics`))), 5000)
            collecting.set(id, (metrics) => {
              clearTimeout(timer)
              collecting.delete(id)
              if (metrics) resolve({ worker: indexOf.get(worker)!, metrics })
              else reject(new Error(`worker ${indexOf.get(worker)} could not read its metrics`))
            })
            worker.send({ nis: 'collect', id } satisfies ToWorker)
          }),
      ),
    )
    return aggregateClusterMetrics(perWorker).metrics()
  }

  for (let i = 0; i < options.workers; i++) fork(i)

  const shutdown = (signal: string) => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'shutting down: draining the workers')
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
    for (const worker of workers) worker.process.kill('SIGTERM')
    const timer = setTimeout(() => {
      log.warn('shutdown deadline reached; killing the remaining workers')
      for (const worker of workers) worker.process.kill('SIGKILL')
    }, options.shutdownTimeoutMs + 5000)
    timer.unref()
  }
  process.once('SIGTERM', () => shutdown('SIGTERM'))
  process.once('SIGINT', () => shutdown('SIGINT'))
  // Lock entries of crashed holders would otherwise stay until asked for again.
  setInterval(() => {
    const now = Date.now()
    for (const [key, lock] of locks) if (lock.expiresAt <= now) locks.delete(key)
  }, 60_000).unref()
}
