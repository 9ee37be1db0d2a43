/**
 * Deadlines that always fire.
 *
 * Not `AbortSignal.timeout` / `AbortSignal.any`: Node holds a timeout signal only weakly, and a
 * composite signal does not keep its sources alive, so after a garbage collection a timeout that
 * nothing else references never fires (nodejs/node#57736). Here the timer is ours, held by Node's
 * timer list until it fires or is cleared, and it holds the controller it aborts.
 */

/** The reason a Deadline's signal aborts when its own time is up. */
export class DeadlineExceeded extends Error {
  constructor(readonly ms: number) {
    super(`deadline of ${ms} ms exceeded`)
    this.name = 'DeadlineExceeded'
  }
}

/** When each Deadline's signal will abort (performance.now() time), for `remainingMs`. */
const ends = new WeakMap<AbortSignal, number>()

/** Milliseconds until `signal`'s deadline (its own or a parent's); Infinity when it has none. */
export function remainingMs(signal: AbortSignal | undefined): number {
  const end = signal && ends.get(signal)
  return end === undefined ? Infinity : Math.max(0, end - performance.now())
}

export class Deadline {
  private readonly controller = new AbortController()
  private readonly timer: NodeJS.Timeout
  private unlink: (() => void) | undefined

  /**
   * Aborts after `ms`, or as soon as `parent` aborts (with the parent's reason). Call `clear()`
   * when the work ends, so the timer and the parent's listener go with it.
   */
  constructor(ms: number, parent?: AbortSignal) {
    ends.set(this.controller.signal, performance.now() + Math.min(ms, remainingMs(parent)))
    this.timer = setTimeout(() => this.abort(new DeadlineExceeded(ms)), ms)
    // The timer must not keep a process alive that has nothing else to do; unref'd, it still fires.
    this.timer.unref()
    if (parent?.aborted) {
      this.abort(parent.reason)
    } else if (parent) {
      const onAbort = () => this.abort(parent.reason)
      parent.addEventListener('abort', onAbort, { once: true })
      this.unlink = () => parent.removeEventListener('abort', onAbort)
    }
  }

  get signal(): AbortSignal {
    return this.controller.signal
  }

  /** Stops the timer and detaches from the parent; the signal stays as it is. */
  clear(): void {
    clearTimeout(this.timer)
    this.unlink?.()
    this.unlink = undefined
  }

  /** Runs `work` under a new deadline and clears it however the work ends. */
  static async run<T>(ms: number, parent: AbortSignal | undefined, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const deadline = new Deadline(ms, parent)
    try {
      return await work(deadline.signal)
    } finally {
      deadline.clear()
    }
  }

  private abort(reason: unknown): void {
    this.clear()
    this.controller.abort(reason)
  }
}

/**
 * Settles like `promise`, or rejects with the signal's reason as soon as it aborts — for waits
 * that take no signal of their own (a DNS lookup, another request's job, a lock announcement).
 * The promise itself is not cancelled; the caller only stops waiting for it.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => (signal.removeEventListener('abort', onAbort), resolve(value)),
      (err: unknown) => (signal.removeEventListener('abort', onAbort), reject(err)),
    )
  })
}
