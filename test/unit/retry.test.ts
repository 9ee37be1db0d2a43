/**
 * The retry policy per failure class (issue 39): connection failures and upstream 5xx are retried
 * and end in the documented 502; a timeout is never retried and always ends in Next's own answer.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { withAttempts } from '../../sidecar/upstream/retry.js'
import { timedOut, TransientUpstreamError } from '../../sidecar/upstream/http.js'
import { ImageError, MESSAGES } from '../../sidecar/errors.js'

/** A job failing with `failures` in turn (then succeeding), counting its calls. */
function jobFailing(...failures: unknown[]) {
  const job = async () => {
    job.calls++
    const failure = failures[job.calls - 1]
    if (failure) throw failure
    return 'ok'
  }
  job.calls = 0
  return job
}

const options = (maxAttempts = 3) => ({ maxAttempts, signal: new AbortController().signal, backoffMs: 1 })
const reset = () => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })

test('a transient failure is retried until the job succeeds', async () => {
  const job = jobFailing(new TransientUpstreamError(503, MESSAGES.upstreamInvalid), reset())
  assert.equal(await withAttempts(job, options()), 'ok')
  assert.equal(job.calls, 3)
})

test('transient failures on every attempt end in the documented 502', async () => {
  const job = jobFailing(reset(), reset(), reset())
  await assert.rejects(withAttempts(job, options()), (err: ImageError) => err.statusCode === 502 && err.message === '"url" parameter is valid but upstream response failed after 3 attempts')
  assert.equal(job.calls, 3)
})

test('an upstream timeout is not retried: Next\'s 504 with Next\'s text, after one attempt', async () => {
  const job = jobFailing(timedOut(new Error('7 s passed')))
  await assert.rejects(withAttempts(job, options()), (err: ImageError) => err.statusCode === 504 && err.message === MESSAGES.upstreamTimedOut)
  assert.equal(job.calls, 1)
})

test('retries that end on a timeout answer Next\'s 504, not the 502', async () => {
  const job = jobFailing(reset(), timedOut(), reset())
  await assert.rejects(withAttempts(job, options()), (err: ImageError) => err.statusCode === 504 && err.message === MESSAGES.upstreamTimedOut)
  assert.equal(job.calls, 2)
})

test('with one attempt every error stands as it is', async () => {
  for (const failure of [timedOut(), new TransientUpstreamError(503, MESSAGES.upstreamInvalid)]) {
    const job = jobFailing(failure)
    await assert.rejects(withAttempts(job, options(1)), (err) => err === failure)
  }
})
