import pLimit, { type LimitFunction } from 'p-limit'
import { ImageError } from './errors.js'
import type { Metrics } from './metrics.js'

/**
 * The transform queue: at most `concurrency` transforms at once and at most `maxWaiting`
 * in line. Beyond that the sidecar sheds load with 503 + Retry-After instead of growing
 * memory with queued source images.
 */
export class WorkQueue {
  private readonly limit: LimitFunction

  constructor(
    concurrency: number,
    private readonly maxWaiting: number,
    private readonly metrics: Metrics,
    private readonly retryAfterSeconds = 1,
  ) {
    this.limit = pLimit(concurrency)
  }

  get waiting(): number {
    return this.limit.pendingCount
  }

  get active(): number {
    return this.limit.activeCount
  }

  run<T>(job: () => Promise<T>): Promise<T> {
    if (this.limit.pendingCount >= this.maxWaiting && this.limit.activeCount >= this.limit.concurrency) {
      this.metrics.shed.inc()
      return Promise.reject(
        new ImageError(503, 'Service Unavailable: the image queue is full, retry shortly', { headers: { 'Retry-After': String(this.retryAfterSeconds) } }),
      )
    }
    const result = this.limit(async () => {
      this.metrics.queueDepth.set(this.limit.pendingCount)
      return job()
    })
    this.metrics.queueDepth.set(this.limit.pendingCount)
    return result
  }
}
