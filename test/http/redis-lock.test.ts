/**
 * The cross-replica single-flight lock survives lost Redis traffic: a lock whose release (or whose
 * acquisition) did not get through is let go once Redis answers again, instead of making every other
 * replica wait for that key until its deadline (found by the Cluster failover test: a master killed
 * under load left a lock that its holder had failed to release).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { silentLogger } from '../helpers/sidecar.js'
import { waitUntil } from '../helpers/wait.js'
import { RedisCoordinator } from '../../sidecar/cache/redis-coordinator.js'
import { RedisStore } from '../../sidecar/cache/redis-store.js'

/**
 * A TCP hop between the store and Redis that can lose traffic one way, as a dying master's connection
 * does: `lose('requests')` swallows commands (a release never reaches Redis), `lose('replies')`
 * swallows answers (a lock is taken but the taker never hears it). `reconnect()` then drops every
 * connection, so the client reconnects (to the same Redis, which kept its data, like a promoted replica).
 */
class LossyHop {
  private losing: 'requests' | 'replies' | undefined
  private readonly sockets = new Set<Socket>()
  private constructor(private readonly server: Server) {}

  static async start(redisPort: number): Promise<LossyHop> {
    let hop: LossyHop | undefined
    const server = createServer((client) => {
      const upstream = connect(redisPort, '127.0.0.1')
      for (const s of [client, upstream]) {
        hop!.sockets.add(s)
        s.on('close', () => hop!.sockets.delete(s))
        s.on('error', () => undefined)
      }
      client.on('data', (d) => hop!.losing !== 'requests' && upstream.write(d))
      upstream.on('data', (d) => hop!.losing !== 'replies' && client.write(d))
      client.on('close', () => upstream.destroy())
      upstream.on('close', () => client.destroy())
    }).listen(0, '127.0.0.1')
    await once(server, 'listening')
    hop = new LossyHop(server)
    return hop
  }

  get url(): string {
    return `redis://127.0.0.1:${(this.server.address() as { port: number }).port}`
  }

  lose(direction: 'requests' | 'replies'): void {
    this.losing = direction
  }

  reconnect(): void {
    this.losing = undefined
    for (const s of this.sockets) s.destroy()
  }

  close(): void {
    this.reconnect()
    this.server.close()
  }
}

let redis: PrivateRedis
let hop: LossyHop
let store: RedisStore
let holder: RedisCoordinator
let other: RedisCoordinator
const LOCK_TTL_MS = 60_000

/** Whether the other replica gets the lock now (false while it is held, or while the client reconnects). */
const acquired = (key: string) => other.acquire(key, LOCK_TTL_MS).then((lock) => lock !== undefined, () => false)

before(async () => {
  redis = await PrivateRedis.start()
  hop = await LossyHop.start(redis.port)
  store = new RedisStore(hop.url, uniquePrefix('lock'), { maxSize: Infinity, maxEntrySize: 1 << 20 }, silentLogger)
  await store.ping()
  // Two replicas' coordinators; one store connection is enough to share the lock keys.
  holder = new RedisCoordinator(store, silentLogger)
  other = new RedisCoordinator(store, silentLogger)
})

after(async () => {
  hop?.close()
  await holder?.close()
  await other?.close()
  await store?.close()
  await redis?.kill()
})

test('a release lost on the way to Redis happens once Redis answers again', async () => {
  const lock = await holder.acquire('photo-a', LOCK_TTL_MS)
  assert.ok(lock)
  hop.lose('requests')
  await assert.rejects(holder.release(lock), /did not answer/)
  hop.reconnect()
  // Far sooner than the lock's own 60 s expiry.
  await waitUntil(() => acquired('photo-a'), 'the lock to be free for another replica', 10_000, 100)
})

test('an acquisition whose answer was lost does not leave a lock nobody knows it holds', async () => {
  hop.lose('replies')
  await assert.rejects(holder.acquire('photo-b', LOCK_TTL_MS), /did not answer/)
  hop.reconnect()
  await waitUntil(() => acquired('photo-b'), 'the lock to be free for another replica', 10_000, 100)
})
