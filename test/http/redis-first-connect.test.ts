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
import { freePort } from '../helpers/next-app.js'
import { waitUntil } from '../helpers/wait.js'
import { RedisCoordinator } from '../../sidecar/cache/redis-coordinator.js'
import type { PurgeMessage } from '../../sidecar/runtime/coordinator.js'
import { pino } from 'pino'
import { createClient } from '@redis/client'

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

test('a replica that starts before Redis answers subscribes to purges once it does: listed as listening, and a purge waits for it and reaches it', async () => {
  const port = await freePort()
  const prefix = uniquePrefix('late-subscribe')
  const lines: string[] = []
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) })
  const late = new RedisStore(`redis://127.0.0.1:${port}`, prefix, { maxSize: Infinity, maxEntrySize: 1 << 20 }, log)
  const lateReplica = new RedisCoordinator(late, log)
  const applied: PurgeMessage[] = []
  lateReplica.onPurge(async (selector) => void applied.push(selector))
  let redis: PrivateRedis | undefined
  let other: RedisStore | undefined
  let purger: RedisCoordinator | undefined
  try {
    // Its first subscription fails: nothing listens on the port yet.
    await waitUntil(() => lines.some((l) => l.includes('could not subscribe to the purge channel')), 'the first subscription to fail', 30_000)
    redis = await PrivateRedis.start({ port })
    const direct = await createClient({ url: redis.url }).connect()
    try {
      await waitUntil(async () => (await direct.zCard(`${prefix}{purge}members`)) === 1, 'the late replica to be listed as listening for purges', 30_000, 100)
    } finally {
      direct.destroy()
    }
    other = new RedisStore(redis.url, prefix, { maxSize: Infinity, maxEntrySize: 1 << 20 }, silentLogger)
    purger = new RedisCoordinator(other, silentLogger)
    purger.onPurge(async () => {})
    assert.deepEqual(await purger.announcePurge({ sources: ['/a.jpg'] }), { applied: 1, missed: 0 })
    assert.deepEqual(applied, [{ sources: ['/a.jpg'] }])
  } finally {
    await lateReplica.close()
    await purger?.close()
    await late.close()
    await other?.close()
    await redis?.kill()
  }
})
