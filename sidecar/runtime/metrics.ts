import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** The Prometheus metrics of one sidecar (one registry each, so several can share a process). */
export function createMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'next_image_sidecar_' })
  return {
    registry,
    transforms: new Counter({
      name: 'next_image_sidecar_transforms_total',
      help: 'Image jobs that ran the transform step (sharp, or a pass-through/fallback decision) on fetched bytes',
      registers: [registry],
    }),
    upstreamFetches: new Counter({
      name: 'next_image_sidecar_upstream_fetches_total',
      help: 'Requests sent to an upstream (the frontend or a remote host), conditional ones included',
      labelNames: ['kind', 'outcome'] as const,
      registers: [registry],
    }),
    cacheRequests: new Counter({
      name: 'next_image_sidecar_cache_requests_total',
      help: 'Image requests answered from the cache (hit, stale) or not (miss)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    sourceChecks: new Counter({
      name: 'next_image_sidecar_source_checks_total',
      help: 'Checks of a cached entry against its source (--revalidate-after): unchanged, changed or failed; at most one per entry and interval',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    placeholderRequests: new Counter({
      name: 'next_image_sidecar_placeholder_requests_total',
      help: 'Placeholder requests (/_sidecar/placeholder) answered from the cache (hit, stale) or not (miss); not in cache_requests_total',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    placeholders: new Counter({
      name: 'next_image_sidecar_placeholders_total',
      help: 'Placeholders made from fetched bytes, by whether they carry a blur (formats Next does not blur carry only the size)',
      labelNames: ['blur'] as const,
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'next_image_sidecar_queue_depth',
      help: 'Transforms waiting for a worker slot',
      registers: [registry],
    }),
    queueCapacity: new Gauge({
      name: 'next_image_sidecar_queue_capacity',
      help: 'Image jobs allowed to wait for admission (--queue-size); beyond it requests are shed with 503',
      registers: [registry],
    }),
    transformDuration: new Histogram({
      name: 'next_image_sidecar_transform_duration_seconds',
      help: 'Time one transform took, waiting excluded',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    shed: new Counter({
      name: 'next_image_sidecar_shed_total',
      help: 'Requests refused with 503 because the transform queue was full',
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'next_image_sidecar_request_duration_seconds',
      help: 'Time to answer a request, by status class',
      labelNames: ['status_class'] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    upstreamDuration: new Histogram({
      name: 'next_image_sidecar_upstream_fetch_duration_seconds',
      help: 'Time one upstream fetch took (headers and body), by kind',
      labelNames: ['kind'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    sourcesHeld: new Gauge({
      name: 'next_image_sidecar_sources_held',
      help: 'Source images being downloaded or waiting for their transform (bounded by 2 × concurrency)',
      registers: [registry],
    }),
    sourceDeferrals: new Counter({
      name: 'next_image_sidecar_source_deferrals_total',
      help: 'Upstream answers dropped unread because no source slot was free; the job waited for one and fetched again',
      registers: [registry],
    }),
    memoryRefused: new Counter({
      name: 'next_image_sidecar_memory_refused_total',
      help: 'Image jobs refused with 503 because their estimated working set exceeds what this process may hold',
      registers: [registry],
    }),
    memoryReserved: new Gauge({
      name: 'next_image_sidecar_memory_reserved_bytes',
      help: 'Estimated working sets of the transforms admitted right now',
      registers: [registry],
    }),
    // The limits the sidecar derived at start (cgroup or host, and flags); constant per process.
    limitCpus: new Gauge({
      name: 'next_image_sidecar_limit_cpus',
      // The same in every worker of a --workers cluster: /metrics shows it once, not summed.
      aggregator: 'first',
      help: 'CPUs the cgroup quota allows (or the cores Node may use)',
      registers: [registry],
    }),
    limitMemory: new Gauge({
      name: 'next_image_sidecar_limit_memory_bytes',
      // The same in every worker of a --workers cluster: /metrics shows it once, not summed.
      aggregator: 'first',
      help: 'The memory limit planned for: the cgroup limit, --memory-limit, or half the host memory',
      registers: [registry],
    }),
    memoryBudget: new Gauge({
      name: 'next_image_sidecar_memory_budget_bytes',
      help: 'Bytes the estimated working sets of concurrent transforms may add up to',
      registers: [registry],
    }),
    concurrency: new Gauge({
      name: 'next_image_sidecar_concurrency',
      help: 'Transforms allowed to run at once in this process',
      registers: [registry],
    }),
    libvipsThreads: new Gauge({
      name: 'next_image_sidecar_libvips_threads',
      // The same in every worker of a --workers cluster: /metrics shows it once, not summed.
      aggregator: 'first',
      help: 'Threads libvips uses per transform',
      registers: [registry],
    }),
    storeUp: new Gauge({
      name: 'next_image_sidecar_cache_store_up',
      help: 'By op (read, write): 1 while the cache store serves that kind of operation, 0 while it fails (a full disk or a Redis at maxmemory still reads)',
      labelNames: ['op'] as const,
      registers: [registry],
    }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
