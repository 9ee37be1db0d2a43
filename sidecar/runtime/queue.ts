import { remainingMs, untilAborted } from './deadline.js'
import { ImageError } from '../errors.js'
import type { Metrics } from './metrics.js'

/** Sources downloaded ahead of the transforms, per transform slot: the CPU never waits on a download. */
const FETCH_AHEAD = 1
/**
 * Upstream requests in flight: 8 per transform slot, at least 32. Waiting for an upstream's answer
 * costs a socket, not memory, so stalled upstreams must not hold the slots of images whose
 * upstreams answer.
 */
const requestSlots = (concurrency: number) => Math.max(concurrency * 8, 32)

const MiB = 1024 ** 2

/**
 * A weighted semaphore whose waiters are served first come, first served and leave the line
 * the moment their deadline passes. Something heavier than the whole capacity is admitted
 * only when nothing else holds any (it then runs alone).
 * Hand-written on purpose: p-limit and p-queue have no weights, keep an aborted waiter in line
 * until its turn comes (so the line's length lies), and p-queue frees a slot while the aborted
 * work still runs.
 */
export class Slots {
  private used = 0
  private readonly line = new Set<{ weight: number; grant: () => void }>()

  constructor(readonly size: number) {}

  /** Weight held by the admitted right now. */
  get running(): number {
    return this.used
  }

  get waiting(): number {
    return this.line.size
  }

  /** Takes `weight` if it fits now and nobody is in line before; never waits. */
  tryAcquire(weight = 1): boolean {
    if (this.line.size > 0 || !this.fits(weight)) return false
    this.used += weight
    return true
  }

  /** Takes `weight` of the capacity, waiting in line until it fits or `signal` aborts. */
  acquire(signal?: AbortSignal, weight = 1): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.line.size === 0 && this.fits(weight)) {
      this.used += weight
      return Promise.resolve()
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        weight,
        grant: () => {
          signal?.removeEventListener('abort', leave)
          resolve()
        },
      }
      const leave = () => {
        this.line.delete(waiter)
        reject(signal!.reason)
        this.admit() // the first in line may have been what blocked the others
      }
      this.line.add(waiter)
      signal?.addEventListener('abort', leave, { once: true })
    })
  }

  /** Gives `weight` back and admits whoever is first in line, as long as they fit. */
  release(weight = 1): void {
    this.used -= weight
    this.admit()
  }

  private fits(weight: number): boolean {
    return this.used === 0 || this.used + weight <= this.size
  }

  private admit(): void {
    for (const waiter of this.line) {
      if (!this.fits(waiter.weight)) return
      this.line.delete(waiter)
      this.used += waiter.weight
      waiter.grant()
    }
  }
}

/** Memory the transforms may use: their estimates together (`budgetBytes`), and one alone (`maxJobBytes`). */
export interface MemoryLimits {
  budgetBytes: number
  maxJobBytes: number
}

/** Called by a transform with its estimated working set, before it decodes anything. */
export type AdmitMemory = (estimatedBytes: number) => Promise<void>

/**
 * A job's admission of its source body: `tryAdmit` once its upstream answered with a body (never
 * waits, so no upstream timer runs during a wait for our own capacity); when that fails the fetch
 * drops the response, calls `wait` (bounded by the job's deadline) and fetches again.
 */
export interface SourceAdmission {
  tryAdmit(): boolean
  wait(): Promise<void>
}

/** Transform durations remembered before any request is refused early on the wait estimate. */
const MIN_SAMPLES = 3
/** Weight of the newest transform duration in the moving average. */
const EWMA_ALPHA = 0.2
/**
 * A job is refused early only when the estimated wait exceeds its remaining time this many times
 * over: the pace of the last transforms says little about the next ones (a 640 px thumbnail and
 * an 18 MP photo differ tenfold), and refusing work the pod would have finished is the worse error.
 */
const EARLY_REFUSAL_MARGIN = 2

/**
 * The work queue, in stages so memory stays bounded by the limits, not by the traffic:
 * - a job (fetch + transform) is admitted when fewer than `max(8 × concurrency, 32)`
 *   jobs run; at most `maxWaiting` wait for admission, holding nothing but their request.
 *   Beyond that the sidecar sheds load with 503 + Retry-After;
 * - once its upstream answers with an image, a job takes one of `concurrency × (1 + FETCH_AHEAD)`
 *   source slots before reading the body (so a stalled upstream holds a socket, not a slot); when
 *   none is free it drops the response, waits for one under its own deadline (not the upstream's
 *   timer) and fetches again;
 * - the transform takes one of `concurrency` slots,
 * - then, before decoding, its estimated working set from the memory budget: transforms run
 *   together only while their estimates fit; one larger than the budget runs alone; one larger
 *   than the process may hold at all is refused with 503 + Retry-After (another replica may
 *   have more memory) instead of taking the process down with everything else.
 * So at most `concurrency × (1 + FETCH_AHEAD)` source images are in memory at once.
 * Every wait ends at the job's deadline: a request still waiting for a slot then gets 503 + Retry-After.
 * A job whose wait, estimated from the work ahead of it and the recent transform times, would not
 * end before its deadline is refused at once (503 + Retry-After) instead of after waiting.
 */
export class WorkQueue {
  private readonly jobs: Slots
  private readonly sources: Slots
  private readonly transforms: Slots
  private readonly memory: Slots
  /** Moving average of recent transform durations, and how many were seen. */
  private transformSeconds = 0
  private samples = 0
  private readonly parallel: number

  constructor(
    concurrency: number,
    private readonly maxWaiting: number,
    private readonly metrics: Metrics,
    private readonly memoryLimits: MemoryLimits = { budgetBytes: Number.MAX_SAFE_INTEGER, maxJobBytes: Number.MAX_SAFE_INTEGER },
    private readonly retryAfterSeconds = 1,
  ) {
    this.parallel = Math.max(1, concurrency)
    this.jobs = new Slots(requestSlots(concurrency))
    this.sources = new Slots(concurrency * (1 + FETCH_AHEAD))
    this.transforms = new Slots(concurrency)
    this.memory = new Slots(memoryLimits.budgetBytes)
  }

  /** Jobs waiting for admission, a source slot, a transform slot or memory. */
  get waiting(): number {
    return this.jobs.waiting + this.sources.waiting + this.transforms.waiting + this.memory.waiting
  }

  /** Source images downloading or downloaded, not yet transformed. */
  get sourcesHeld(): number {
    return this.sources.running
  }

  /**
   * Runs a whole image job (fetch, then `transform`), or sheds it when the line is full. The job
   * takes a source slot through `admission` before reading its upstream's body.
   */
  async job<T>(signal: AbortSignal, job: (admission: SourceAdmission) => Promise<T>): Promise<T> {
    if (this.jobs.waiting >= this.maxWaiting && this.jobs.running >= this.jobs.size) {
      this.metrics.shed.inc()
      throw this.unavailable('the image queue is full, retry shortly')
    }
    await this.enter(this.jobs, signal, 1, () => this.jobs.running + this.jobs.waiting)
    let holdsSource = false
    const admission: SourceAdmission = {
      // A retry of the same job keeps its slot.
      tryAdmit: () => holdsSource || (holdsSource = this.sources.tryAcquire()),
      wait: async () => {
        if (holdsSource) return
        this.metrics.sourceDeferrals.inc()
        await this.enter(this.sources, signal, 1, () => this.sources.running + this.sources.waiting)
        holdsSource = true
      },
    }
    try {
      return await job(admission)
    } finally {
      if (holdsSource) this.sources.release()
      this.jobs.release()
      this.updateDepth()
    }
  }

  /**
   * Runs a transform in one of the `concurrency` slots (call it inside `job`); the transform calls
   * `admit` with its estimate before it decodes. At the deadline the caller stops waiting, but
   * the slot and the memory stay taken until the transform really ends (sharp cannot be
   * interrupted; its own timeout bounds it), so the limits hold for what really runs.
   */
  async transform<T>(signal: AbortSignal, transform: (admit: AdmitMemory) => Promise<T>): Promise<T> {
    await this.enter(this.transforms, signal)
    // The pace counts the work itself: a wait for memory is not a transform's duration.
    let started = performance.now()
    let reserved = 0
    const admit: AdmitMemory = async (estimatedBytes) => {
      const bytes = Math.max(Math.round(estimatedBytes), 1)
      if (bytes > this.memoryLimits.maxJobBytes) {
        this.metrics.memoryRefused.inc()
        throw this.unavailable('this image needs more memory than this process may use', {
          cause: new Error(`estimated working set ${(bytes / MiB).toFixed(0)} MiB > ${(this.memoryLimits.maxJobBytes / MiB).toFixed(0)} MiB this process may hold for one image`),
        })
      }
      await this.enter(this.memory, signal, bytes)
      started = performance.now()
      reserved = bytes
      this.metrics.memoryReserved.inc(bytes)
    }
    // Only a transform that ran sets the pace: one refused or timed out while waiting for memory
    // would count its wait as work.
    const ran = (value: T) => (this.recordTransform((performance.now() - started) / 1000), value)
    const running = transform(admit).then(ran).finally(() => {
      if (reserved > 0) {
        this.memory.release(reserved)
        this.metrics.memoryReserved.dec(reserved)
      }
      this.transforms.release()
      this.updateDepth()
    })
    return untilAborted(running, signal)
  }

  private recordTransform(seconds: number): void {
    this.transformSeconds = this.samples === 0 ? seconds : this.transformSeconds + EWMA_ALPHA * (seconds - this.transformSeconds)
    this.samples++
  }

  /**
   * Whether a job with `ahead` transforms before it would finish its own before its deadline at
   * the recent pace (`concurrency` at a time). Until enough transforms were seen, assume so.
   */
  private canFinish(signal: AbortSignal, ahead: number): boolean {
    if (this.samples < MIN_SAMPLES) return true
    const rounds = Math.ceil((ahead + 1) / this.parallel)
    return rounds * this.transformSeconds * 1000 <= EARLY_REFUSAL_MARGIN * remainingMs(signal)
  }

  /**
   * Takes `weight` of `slots`, waiting in line under `signal`. With `ahead` (the transforms that
   * will run before this job's), a job that must wait is first asked whether it can finish in time.
   */
  private async enter(slots: Slots, signal: AbortSignal, weight = 1, ahead?: () => number): Promise<void> {
    if (ahead) {
      if (slots.tryAcquire(weight)) return this.updateDepth()
      if (!this.canFinish(signal, ahead())) {
        this.metrics.shed.inc()
        throw this.unavailable('the work ahead of this image would not finish before its deadline, retry shortly')
      }
    }
    const waiting = slots.acquire(signal, weight)
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

  private unavailable(reason: string, options: { cause?: unknown } = {}): ImageError {
    return new ImageError(503, `Service Unavailable: ${reason}`, { headers: { 'Retry-After': String(this.retryAfterSeconds) }, ...options })
  }

  private updateDepth(): void {
    this.metrics.queueDepth.set(this.waiting)
    this.metrics.sourcesHeld.set(this.sources.running)
  }
}
