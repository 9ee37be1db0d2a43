/**
 * The sidecar under a least-privilege Redis 7 ACL user: keys under its prefix, and either its release
 * channel or no channel at all (Redis 7's default `acl-pubsub-default resetchannels`). Without the
 * channel, single flight falls back to polling: no connection leaked per wait round, no release retried
 * forever, no waiter set left behind.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@redis/client'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { silentLogger, testSidecar } from '../helpers/sidecar.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { image } from '../helpers/image-url.js'
import { waitUntil } from '../helpers/wait.js'
import { RedisCoordinator } from '../../sidecar/cache/redis-coordinator.js'
import { RedisStore } from '../../sidecar/cache/redis-store.js'

const PREFIX = uniquePrefix('acl')
/** The ACL the README documents: the commands the sidecar sends, its keys, optionally its channel. */
const rules = (channel: boolean) => ['on', '>pw', 'resetkeys', `~${PREFIX}*`, 'resetchannels', ...(channel ? [`&${PREFIX}done`] : []), '-@all', '+get', '+set', '+unlink', '+del', '+eval', '+evalsha', '+ping', '+publish', '+subscribe', '+unsubscribe']

let redis: PrivateRedis
let admin: ReturnType<typeof createClient>
let upstream: UpstreamServer
const url = (user: string) => `redis://${user}:pw@127.0.0.1:${redis.port}`

before(async () => {
  redis = await PrivateRedis.start()
  admin = createClient({ url: redis.url })
  await admin.connect()
  await admin.sendCommand(['ACL', 'SETUSER', 'nochannel', ...rules(false)])
  await admin.sendCommand(['ACL', 'SETUSER', 'withchannel', ...rules(true)])
  upstream = await startUpstream()
})
after(async () => {
  await admin?.close()
  await redis?.kill()
  await upstream?.close()
})

async function connectionsOf(user: string): Promise<number> {
  const list = String(await admin.sendCommand(['CLIENT', 'LIST']))
  return list.split('\n').filter((line) => line.includes(` user=${user} `)).length
}

function open(user: string) {
  const store = new RedisStore(url(user), PREFIX, { maxSize: Infinity, maxEntrySize: 1 << 20 }, silentLogger)
  return { store, coordinator: new RedisCoordinator(store, silentLogger) }
}

test('channel refused: ten wait rounds open no connection beyond the store’s own, and close() leaves none', async () => {
  const { store, coordinator } = open('nochannel')
  await store.ping()
  const base = await connectionsOf('nochannel')
  for (let i = 0; i < 10; i++) await coordinator.waitFor('some-key', 50)
  assert.equal(await connectionsOf('nochannel'), base)
  await coordinator.close()
  await store.close()
  await waitUntil(async () => (await connectionsOf('nochannel')) === 0, 'every connection of the user to close', 5000)
})

test('a wait that timed out leaves no empty waiter set behind', async () => {
  const { store, coordinator } = open('nochannel')
  await store.ping()
  await Promise.all(['a', 'b', 'c'].map((key) => coordinator.waitFor(key, 20)))
  assert.equal(coordinator.waiting, 0)
  await coordinator.close()
  await store.close()
})

test('channel refused: a release frees the lock at once and is not retried', async () => {
  const { store, coordinator } = open('nochannel')
  await store.ping()
  const lock = await coordinator.acquire('photo', 60_000)
  assert.ok(lock)
  await coordinator.release(lock)
  assert.equal(await admin.exists(`${PREFIX}lock:photo`), 0)
  await coordinator.close()
  await store.close()
})

test('channel granted: a waiter wakes on the release, long before its own timeout', async () => {
  const { store, coordinator } = open('withchannel')
  await store.ping()
  const lock = await coordinator.acquire('wake', 60_000)
  assert.ok(lock)
  // The first waitFor subscribes; wait until the subscription is in place, then release.
  const woken = coordinator.waitFor('wake', 60_000)
  await waitUntil(async () => Number(((await admin.sendCommand(['PUBSUB', 'NUMSUB', `${PREFIX}done`])) as unknown[])[1]) === 1, 'the subscription', 5000)
  await coordinator.release(lock)
  let timer: NodeJS.Timeout | undefined
  await Promise.race([woken, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the waiter was not woken')), 10_000)))]).finally(() => clearTimeout(timer))
  await coordinator.close()
  await store.close()
})

for (const user of ['nochannel', 'withchannel']) {
  test(`the sidecar serves and caches through Redis as ACL user "${user}"`, async () => {
    const s = testSidecar({ frontend: upstream.url, cache: url(user), cachePrefix: PREFIX, hotCacheSize: 0 })
    try {
      await s.store.ping()
      const path = image('/corpus/png/chelsea.png', 48 + (user === 'nochannel' ? 0 : 16))
      const first = await fetchVia(s, path)
      assert.equal(first, 'MISS')
      assert.equal(await fetchVia(s, path), 'HIT')
      assert.equal(s.store.available, true)
    } finally {
      await s.close()
    }
  })
}

async function fetchVia(s: ReturnType<typeof testSidecar>, path: string): Promise<string | null> {
  const server = await s.listen(0, '127.0.0.1')
  try {
    const res = await fetch(`${server.url}${path}`, { headers: { accept: 'image/webp' } })
    assert.equal(res.status, 200)
    await res.arrayBuffer()
    return res.headers.get('x-nextjs-cache')
  } finally {
    server.closeAllConnections()
    server.close()
  }
}
