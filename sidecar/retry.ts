import { setTimeout as sleep } from 'node:timers/promises'
import { ImageError, MESSAGES } from './errors.js'
import { TransientUpstreamError } from './upstream.js'

export interface AttemptOptions {
  maxAttempts: number
  /** Deadline for all attempts together; when it passes the job ends as a timeout. */
  timeoutMs: number
  /** First backoff delay; it doubles on each retry (with jitter). */
  backoffMs?: number
}

// Connection-level failures that say nothing about the image itself.
const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET'])

export function isTransient(err: unknown): boolean {
  if (err instanceof TransientUpstreamError) return true
  if (err instanceof ImageError) return false
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code !== undefined && TRANSIENT_CODES.has(code)
}

/**
 * Runs `job` until it succeeds, fails for good, or `maxAttempts` transient failures are spent
 * (then 502). With one attempt the job's own error stands, so statuses are exactly Next's.
 * The job gets a signal that aborts at the deadline.
 */
export async function withAttempts<T>(job: (signal: AbortSignal) => Promise<T>, options: AttemptOptions): Promise<T> {
  const deadline = AbortSignal.timeout(options.timeoutMs)
  const backoffMs = options.backoffMs ?? 100
  let lastError: unknown
  for (let attempt = 1; attempt <= options.maxAttempts; attempt++) {
    try {
      return await job(deadline)
    } catch (err) {
      lastError = err
      if (deadline.aborted) throw new ImageError(504, MESSAGES.upstreamTimedOut, { cause: err })
      if (!isTransient(err) || options.maxAttempts === 1) throw err
      if (attempt < options.maxAttempts) {
        const delay = backoffMs * 2 ** (attempt - 1) * (0.5 + Math.random())
        await sleep(delay, undefined, { signal: deadline }).catch(() => undefined)
        if (deadline.aborted) throw new ImageError(504, MESSAGES.upstreamTimedOut, { cause: err })
      }
    }
  }
  throw new ImageError(502, `"url" parameter is valid but upstream response failed after ${options.maxAttempts} attempts`, {
    cause: lastError,
  })
}
