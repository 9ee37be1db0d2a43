/**
 * Whom a purge over Redis reached: each replica listed as listening counts once, whatever it sent, and a
 * replica's subscription survives a stall and a close without being counted twice or listed after it left.
 * A purge that reports every replica reached must mean that no hot tier still holds an old copy.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@redis/client'
import { pino, type Logger } from 'pino'
import { RedisCoordinator } from '../../sidecar/cache/redis-coordinator.js'
import { RedisStore } from '../../sidecar/cache/redis-store.js'
import type { PurgeMessage } from '../../sidecar/runtime/coordinator.js'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { LocalRedisCluster } from '../helpers/redis-topologies.js'
import { silentLogger } from '../helpers/sidecar.js'
import { waitUntil } from '../helpers/wait.js'

const limits = { maxSize: Infinity, maxEntrySize: 1 << 20 }
const membersKey = (prefix: string) => `${prefix}{purge}members`

/** A logger whose lines the test can read. */
function recordingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = []
  return { log: pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) }), lines }
}

test('a replica that answers a purge twice counts once: a listed replica that did not answer is reported missed', async () => {
  const redis = await PrivateRedis.start()
  const prefix = uniquePrefix('reach-twice')
  const direct = await createClient({ url: redis.url }).connect()
  const store = new RedisStore(redis.url, prefix, limits, silentLogger)
  const purger = new RedisCoordinator(store, silentLogger)
  try {
    purger.onPurge(async () => {})
    await waitUntil(async () => (await direct.zCard(membersKey(prefix))) === 1, 'the purging replica to be listed', 10_000)
    // Two more listed replicas: "twice" answers every purge two times, "silent" never answers (cut off).
    await direct.zAdd(membersKey(prefix), [{ score: Date.now(), value: 'twice' }, { score: Date.now(), value: 'silent' }])
    const twice = direct.duplicate()
    await twice.connect()
    await twice.subscribe(`${prefix}purge`, (raw) => {
      const message = JSON.parse(raw) as { purge?: PurgeMessage; id: string }
      if (!message.purge) return
      const ack = JSON.stringify({ ack: message.id, from: 'twice' })
      void direct.publish(`${prefix}purge`, ack).then(() => direct.publish(`${prefix}purge`, ack))
    })
    try {
      assert.deepEqual(await purger.announcePurge({ sources: ['/a.jpg'] }), { applied: 1, missed: 1 })
    } finally {
      twice.destroy()
    }
  } finally {
    await purger.close()
    await store.close()
    direct.destroy()
    await redis.kill()
  }
})

test('an answer from a replica that is not listed does not stand in for a listed one that did not answer', async () => {
  const redis = await PrivateRedis.start()
  const prefix = uniquePrefix('reach-stranger')
  const direct = await createClient({ url: redis.url }).connect()
  const store = new RedisStore(redis.url, prefix, limits, silentLogger)
  const purger = new RedisCoordinator(store, silentLogger)
  const stranger = direct.duplicate()
  try {
    purger.onPurge(async () => {})
    await waitUntil(async () => (await direct.zCard(membersKey(prefix))) === 1, 'the purging replica to be listed', 10_000)
    // "silent" is listed and never answers (cut off); "stranger" answers every purge but is not listed (its
    // listing lapsed, say Redis refused its ZADD at maxmemory under noeviction, while its subscription held).
    await direct.zAdd(membersKey(prefix), { score: Date.now(), value: 'silent' })
    await stranger.connect()
    await stranger.subscribe(`${prefix}purge`, (raw) => {
      const message = JSON.parse(raw) as { purge?: PurgeMessage; id: string }
      if (message.purge) void direct.publish(`${prefix}purge`, JSON.stringify({ ack: message.id, from: 'stranger' }))
    })
    assert.deepEqual(await purger.announcePurge({ sources: ['/a.jpg'] }), { applied: 1, missed: 1 })
  } finally {
    stranger.destroy()
    await purger.close()
    await store.close()
    direct.destroy()
    await redis.kill()
  }
})

test('a replica closed while its purge subscription is under way is not listed again afterwards', async (t) => {
  const redis = await PrivateRedis.start()
  const prefix = uniquePrefix('reach-closed')
  const direct = await createClient({ url: redis.url }).connect()
  const store = new RedisStore(redis.url, prefix, limits, silentLogger)
  try {
    await store.ping()
    // The periodic listing (every 20 s) is driven by the test's clock.
    t.mock.timers.enable({ apis: ['setInterval'] })
    await direct.sendCommand(['CLIENT', 'PAUSE', '500', 'ALL'])
    const replica = new RedisCoordinator(store, silentLogger)
    replica.onPurge(async () => {})
    await replica.close()
    assert.equal(await direct.zCard(membersKey(prefix)), 0, 'listed right after close()')
    t.mock.timers.tick(20_000)
    // A command after whatever the tick sent, on the same connection: once it is answered, that has landed.
    await store.run(() => store.client.eval('return 1', { keys: [], arguments: [] }))
    assert.equal(await direct.zCard(membersKey(prefix)), 0, 'listed again by a timer that outlived close()')
  } finally {
    await store.close()
    direct.destroy()
    await redis.kill()
  }
})

test('on a Cluster, a replica whose purge subscription timed out in a stall and landed later applies each purge once and answers once', { timeout: 120_000 }, async () => {
  const cluster = await LocalRedisCluster.start()
  const prefix = uniquePrefix('reach-stall')
  const late = new RedisStore(cluster.url, prefix, limits, silentLogger)
  const purging = new RedisStore(cluster.url, prefix, limits, silentLogger)
  const { log, lines } = recordingLogger()
  const replica = new RedisCoordinator(late, log)
  const purger = new RedisCoordinator(purging, silentLogger)
  try {
    await Promise.all([late.ping(), purging.ping()])
    // Longer than the subscription's 5 s bound: the first attempt times out, its SUBSCRIBE lands after the stall.
    await Promise.all(cluster.nodes.map((n) => n.pause(7000)))
    const applied: PurgeMessage[] = []
    replica.onPurge(async (selector) => void applied.push(selector))
    await waitUntil(() => lines.some((l) => l.includes('subscribed to the purge channel')), 'the replica to subscribe after the stall', 60_000, 100)
    purger.onPurge(async () => {})
    assert.deepEqual(await purger.announcePurge({ sources: ['/a.jpg'] }), { applied: 1, missed: 0 })
    assert.deepEqual(applied, [{ sources: ['/a.jpg'] }])
  } finally {
    await replica.close()
    await purger.close()
    await late.close()
    await purging.close()
    await cluster.stop()
  }
})
