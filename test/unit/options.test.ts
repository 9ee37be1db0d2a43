/** The numeric options of `createSidecar` are checked as the CLI checks its flags: one range each, one message shape. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createSidecar } from '../../sidecar/server/app.js'
import { ConfigError } from '../../sidecar/errors.js'
import { MAX_TIMER_MS } from '../../sidecar/server/options.js'

const base = { frontend: 'http://127.0.0.1:9', cache: 'memory://' }

test('a timeout past setTimeout’s 2^31−1 ms is refused before anything starts', () => {
  assert.throws(
    () => createSidecar({ ...base, timeoutMs: MAX_TIMER_MS + 1 }),
    (err: Error) => err instanceof ConfigError && err.message === 'timeoutMs: expected an integer from 1 to 2147483647 (ms), received "2147483648"',
  )
})

test('every numeric option has its range', () => {
  for (const [key, value] of [
    ['upstreamTimeoutMs', 2 ** 40],
    ['headersTimeoutMs', 0],
    ['keepAliveTimeoutMs', 1.5],
    ['concurrency', 0],
    ['maxAttempts', 1000],
    ['queueSize', -1],
    ['maximumRedirects', 21],
    ['hotCacheSize', -1],
    ['memoryLimit', 1024],
  ] as const) {
    assert.throws(() => createSidecar({ ...base, [key]: value }), (err: Error) => err instanceof ConfigError && err.message.startsWith(`${key}: expected `), key)
  }
})
