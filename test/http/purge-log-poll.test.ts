/**
 * The purge log's poll, which every process with a hot tier runs each second against the shared Redis:
 * while nothing was purged it costs the counter alone, and after a purge only the entries after the
 * process's mark — never the whole log (review find: each poll read all of it, 2.8 MB/s per replica for a
 * log of 1,000 purges of 50 sources).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@redis/client'
import { RedisStore } from '../../sidecar/cache/redis-store.js'
import { PrivateRedis } from '../helpers/redis.js'
import { silentLogger } from '../helpers/sidecar.js'

test('a poll reads the counter while nothing was purged, and only the new entries after a purge', async () => {
  const redis = await PrivateRedis.start()
  const store = new RedisStore(redis.url, 'poll:', { maxSize: Infinity, maxEntrySize: 1 << 20 }, silentLogger)
  const probe = createClient({ url: redis.url })
  await probe.connect()
  const sentBytes = async () => Number(/total_net_output_bytes:(\d+)/.exec(await probe.info('stats'))![1])
  try {
    await store.ping() // the first connection (a command never waits for one)
    // A log of 60 purges, each naming 50 long sources: about 500 kB with their done records.
    const sources = (n: number) => Array.from({ length: 50 }, (_, i) => `/images/catalogue/product-${n}-${i}/photo-with-a-long-name.jpg`)
    for (let n = 0; n < 60; n++) await store.purge({ sources: sources(n) })
    const mark = await store.purgeMark()
    assert.equal(mark, '120', 'two records a purge: logged, and done once its deletes are')

    const idle = await sentBytes()
    for (let i = 0; i < 10; i++) assert.deepEqual(await store.purgesAfter(mark), { mark, selectors: [], completed: [] })
    const idleBytes = (await sentBytes()) - idle
    // The counts include the probe's own INFO reply (~1.4 kB); reading the log would be ~500 kB a poll.
    assert.ok(idleBytes < 10_000, `10 idle polls sent ${idleBytes} bytes`)

    await store.purge({ sources: ['/a.png'] })
    const after = await sentBytes()
    const replay = await store.purgesAfter(mark)
    const replayBytes = (await sentBytes()) - after
    assert.equal(replay.mark, '122')
    assert.ok(replayBytes < 5_000, `the poll after one purge sent ${replayBytes} bytes`)
  } finally {
    await probe.quit()
    await store.close()
    await redis.kill()
  }
})

test('the log keeps 1,000 purges (two records each): a job is not taken as overtaken after 600 purges of other sources', async () => {
  const redis = await PrivateRedis.start()
  const store = new RedisStore(redis.url, 'keep:', { maxSize: Infinity, maxEntrySize: 1 << 20 }, silentLogger)
  try {
    await store.ping()
    const mark = await store.purgeMark()
    for (let n = 0; n < 600; n++) await store.purge({ sources: [`/other-${n}.jpg`] })
    assert.equal(await store.purgedSince(mark, '/a.jpg'), false, 'a source no purge named was taken as purged')
    assert.equal(await store.purgedSince(mark, '/other-0.jpg'), true)
  } finally {
    await store.close()
    await redis.kill()
  }
})
