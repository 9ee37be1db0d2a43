import { setTimeout as sleep } from 'node:timers/promises'
import { ImageError, MESSAGES } from '../errors.js'
import { TransientUpstreamError, UpstreamTimeoutError } from './http.js'

export interface AttemptOptions {
  maxAttempts: number
  /** The job's deadline, for all attempts together; when it aborts the job ends as a timeout. */
  signal: AbortSignal
  /** First backoff delay; it doubles on each retry (with jitter). */
  backoffMs?: number
}

// Connection-level failures that say nothing about the image itself.
const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET'])

export function isTransient(err: unknown): boolean {
  if (err instanceof UpstreamTimeoutError) return false
  if (err instanceof TransientUpstreamError) return true
  if (err instanceof ImageError) return false
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code !== undefined && TRANSIENT_CODES.has(code)
}

/**
 * Runs `job` until it succeeds, fails for good, or `maxAttempts` transient failures are spent
 * (then 502). The policy per failure class:
 * - a connection failure or an upstream 5xx is retried (it often clears within a backoff);
 * - a timeout (UpstreamTimeoutError, also after earlier retries) is never retried and ends the job
 *   with Next's own answer (504 `… upstream response timed out`): another attempt would wait the
 *   whole upstream timeout again, multiplying the page's wait and turning Next's 504 into a 502;
 * - anything else (a 4xx, an invalid image) is the image's answer and stands.
 * With one attempt the job's own error stands, so statuses are exactly Next's.
 * At the deadline an error that is already Next's (an ImageError, e.g. the upstream's 504 or the
 * queue's 503) stands; anything else becomes Next's 504.
 */
export async function withAttempts<T>(job: () => Promise<T>, options: AttemptOptions): Promise<T> {
  const deadline = options.signal
  const timedOut = (err: unknown) => (err instanceof ImageError ? err : new ImageError(504, MESSAGES.upstreamTimedOut, { cause: err }))
  const backoffMs = options.backoffMs ?? 100
  let lastError: unknown
  for (let attempt = 1; attempt <= options.maxAttempts; attempt++) {
    try {
      return await job()
    } catch (err) {
      lastError = err
      if (deadline.aborted) throw timedOut(err)
      if (!isTransient(err) || options.maxAttempts === 1) throw err
      if (attempt < options.maxAttempts) {
        const delay = backoffMs * 2 ** (attempt - 1) * (0.5 + Math.random())
        await sleep(delay, undefined, { signal: deadline }).catch(() => undefined)
        if (deadline.aborted) throw timedOut(err)
      }
    }
  }
  throw new ImageError(502, `"url" parameter is valid but upstream response failed after ${options.maxAttempts} attempts`, {
    cause: lastError,
  })
}
