/**
 * A sidecar serves as soon as it starts, while its Redis connection is still being made: the first
 * requests wait for that connection (within the store's bound) instead of failing at once, which took
 * Redis for down and skipped it for the back-off (each request then a transform; flaked hit-path.test.ts).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { RedisStore } from '../../sidecar/cache/redis-store.js'
import { ResilientStore } from '../../sidecar/cache/resilient-store.js'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { silentLogger } from '../helpers/sidecar.js'

test('a read sent before the first connection is made waits for it, and the store stays up', async () => {
  const redis = await PrivateRedis.start()
  const store = new ResilientStore(new RedisStore(redis.url, uniquePrefix('first'), { maxSize: Infinity, maxEntrySize: 1 << 20 }, silentLogger), silentLogger)
  try {
    // At once, in the same turn as the store's creation: no connection yet.
    assert.equal(await store.get('k'), undefined)
    assert.equal(store.up('read'), true, 'the first read took Redis for down')
  } finally {
    await store.close()
    await redis.kill()
  }
})
