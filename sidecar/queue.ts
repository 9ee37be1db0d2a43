import pLimit, { type LimitFunction } from 'p-limit'
import { ImageError } from './errors.js'
import type { Metrics } from './metrics.js'

/** Sources fetched ahead of the transforms, per transform slot: the CPU never waits on a download. */
const FETCH_AHEAD = 1

/**
 * The work queue, in two stages so memory stays bounded by the concurrency, not by the traffic:
 * - a job (fetch + transform) is admitted when fewer than `concurrency × (1 + FETCH_AHEAD)`
 *   jobs run; at most `maxWaiting` wait for admission, holding nothing but their request.
 *   Beyond that the sidecar sheds load with 503 + Retry-After;
 * - inside a job, the transform takes one of `concurrency` slots.
 * So at most `concurrency × (1 + FETCH_AHEAD)` source images are in memory at once.
 */
export class WorkQueue {
  private readonly jobs: LimitFunction
  private readonly transforms: LimitFunction

  constructor(
    concurrency: number,
    private readonly maxWaiting: number,
    private readonly metrics: Metrics,
    private readonly retryAfterSeconds = 1,
  ) {
    this.jobs = pLimit(concurrency * (1 + FETCH_AHEAD))
    this.transforms = pLimit(concurrency)
  }

  /** Jobs waiting for admission or for a transform slot. */
  get waiting(): number {
    return this.jobs.pendingCount + this.transforms.pendingCount
  }

  /** Runs a whole image job (fetch, then `transform`), or sheds it when the line is full. */
  job<T>(job: () => Promise<T>): Promise<T> {
    if (this.jobs.pendingCount >= this.maxWaiting && this.jobs.activeCount >= this.jobs.concurrency) {
      this.metrics.shed.inc()
      return Promise.reject(
        new ImageError(503, 'Service Unavailable: the image queue is full, retry shortly', { headers: { 'Retry-After': String(this.retryAfterSeconds) } }),
      )
    }
    const result = this.jobs(async () => {
      this.updateDepth()
      try {
        return await job()
      } finally {
        this.updateDepth()
      }
    })
    this.updateDepth()
    return result
  }

  /** Runs a transform in one of the `concurrency` slots (call it inside `job`). */
  transform<T>(transform: () => Promise<T>): Promise<T> {
    const result = this.transforms(async () => {
      this.updateDepth()
      return transform()
    })
    this.updateDepth()
    return result
  }

  private updateDepth(): void {
    this.metrics.queueDepth.set(this.waiting)
  }
}
