import { untilAborted } from './deadline.js'
import { ImageError } from './errors.js'
import type { Metrics } from './metrics.js'

/** Sources fetched ahead of the transforms, per transform slot: the CPU never waits on a download. */
const FETCH_AHEAD = 1

/**
 * A counting semaphore whose waiters leave the line the moment their deadline passes.
 * Hand-written on purpose: p-limit and p-queue keep an aborted waiter in line until its turn
 * comes (so the line's length lies), and p-queue frees a slot while the aborted work still runs.
 */
export class Slots {
  private active = 0
  private readonly line = new Set<() => void>()

  constructor(readonly size: number) {}

  get running(): number {
    return this.active
  }

  get waiting(): number {
    return this.line.size
  }

  /** Takes a slot, waiting in line (first come, first served) until one frees or `signal` aborts. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.active < this.size) {
      this.active++
      return Promise.resolve()
    }
    return new Promise<void>((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener('abort', leave)
        resolve()
      }
      const leave = () => {
        this.line.delete(grant)
        reject(signal!.reason)
      }
      this.line.add(grant)
      signal?.addEventListener('abort', leave, { once: true })
    })
  }

  /** Frees a slot, handing it straight to the first in line. */
  release(): void {
    const first = this.line.values().next()
    if (first.done) {
      this.active--
    } else {
      this.line.delete(first.value)
      first.value()
    }
  }
}

/**
 * The work queue, in two stages so memory stays bounded by the concurrency, not by the traffic:
 * - a job (fetch + transform) is admitted when fewer than `concurrency × (1 + FETCH_AHEAD)`
 *   jobs run; at most `maxWaiting` wait for admission, holding nothing but their request.
 *   Beyond that the sidecar sheds load with 503 + Retry-After;
 * - inside a job, the transform takes one of `concurrency` slots.
 * So at most `concurrency × (1 + FETCH_AHEAD)` source images are in memory at once.
 * Every wait ends at the job's deadline: a request still waiting for a slot then gets 503 + Retry-After.
 */
export class WorkQueue {
  private readonly jobs: Slots
  private readonly transforms: Slots

  constructor(
    concurrency: number,
    private readonly maxWaiting: number,
    private readonly metrics: Metrics,
    private readonly retryAfterSeconds = 1,
  ) {
    this.jobs = new Slots(concurrency * (1 + FETCH_AHEAD))
    this.transforms = new Slots(concurrency)
  }

  /** Jobs waiting for admission or for a transform slot. */
  get waiting(): number {
    return this.jobs.waiting + this.transforms.waiting
  }

  /** Runs a whole image job (fetch, then `transform`), or sheds it when the line is full. */
  async job<T>(signal: AbortSignal, job: () => Promise<T>): Promise<T> {
    if (this.jobs.waiting >= this.maxWaiting && this.jobs.running >= this.jobs.size) {
      this.metrics.shed.inc()
      throw this.unavailable('the image queue is full, retry shortly')
    }
    await this.enter(this.jobs, signal)
    try {
      return await job()
    } finally {
      this.jobs.release()
      this.updateDepth()
    }
  }

  /**
   * Runs a transform in one of the `concurrency` slots (call it inside `job`). At the deadline the
   * caller stops waiting, but the slot stays taken until the transform really ends (sharp cannot be
   * interrupted; its own timeout bounds it), so no more than `concurrency` transforms ever run.
   */
  async transform<T>(signal: AbortSignal, transform: () => Promise<T>): Promise<T> {
    await this.enter(this.transforms, signal)
    const running = transform().finally(() => {
      this.transforms.release()
      this.updateDepth()
    })
    return untilAborted(running, signal)
  }

  private async enter(slots: Slots, signal: AbortSignal): Promise<void> {
    const waiting = slots.acquire(signal)
    this.updateDepth()
    try {
      await waiting
    } catch {
      this.metrics.shed.inc()
      throw this.unavailable('no image slot freed before the deadline, retry shortly')
    } finally {
      this.updateDepth()
    }
  }

  private unavailable(reason: string): ImageError {
    return new ImageError(503, `Service Unavailable: ${reason}`, { headers: { 'Retry-After': String(this.retryAfterSeconds) } })
  }

  private updateDepth(): void {
    this.metrics.queueDepth.set(this.waiting)
  }
}
