/**
 * A store that reads but cannot write (Redis at maxmemory with noeviction; SQLite on a full disk is the
 * same to the store wrapper): reported as not writable, once, without flapping, and its reads still served.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { createClient } from '@redis/client'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { silentLogger } from '../helpers/sidecar.js'
import { RedisStore } from '../../sidecar/cache/redis-store.js'
import { ResilientStore, type StoreOp } from '../../sidecar/cache/resilient-store.js'
import { openStore } from '../../sidecar/cache/open-store.js'
import type { CacheEntry } from '../../sidecar/cache/types.js'

const entry = (bytes = 1000): CacheEntry => ({ buffer: Buffer.alloc(bytes, 3), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 60_000, etag: 'e', upstreamEtag: 'u' })

let redis: PrivateRedis
let admin: ReturnType<typeof createClient>

before(async () => {
  redis = await PrivateRedis.start({ args: ['--maxmemory-policy', 'noeviction'] })
  admin = createClient({ url: redis.url })
  await admin.connect()
})
after(async () => {
  await admin?.close()
  await redis?.kill()
})

/** Redis refuses every write from now on (OOM under noeviction), and still answers reads. */
async function fillUp(): Promise<void> {
  await admin.set('filler', Buffer.alloc(2 * 1024 * 1024, 1))
  await admin.configSet('maxmemory', '1mb')
  await assert.rejects(admin.set('probe', 'x'), /OOM/)
}
async function makeRoom(): Promise<void> {
  await admin.configSet('maxmemory', '0')
  await admin.del('filler')
}

function logLines() {
  const lines: Array<{ msg: string; op?: string }> = []
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) })
  return { log, lines }
}

test('writes refused, reads working: each read right after a failed write is still served', async (t) => {
  const prefix = uniquePrefix('read-only')
  const { store } = openStore(redis.url, silentLogger, { prefix, hotSize: 0 })
  t.after(() => store.close())
  await store.ping()
  await store.set('cached', entry(), 60_000)
  await fillUp()
  t.after(makeRoom)
  for (let i = 0; i < 3; i++) {
    await store.set(`new-${i}`, entry(), 60_000)
    const read = await store.get('cached')
    assert.ok(read, `round ${i}: the stored entry was read despite the failing writes`)
  }
  assert.equal(store.available, false, 'a store that cannot write is not available for a waiter')
})

test('writes refused: reported once as not writable, reads never reported down, no flapping; then recovered once', async (t) => {
  const prefix = uniquePrefix('no-flap')
  const { log, lines } = logLines()
  const transitions: Array<[StoreOp, boolean]> = []
  // No back-off: every operation reaches Redis, so a flapping state would show on each round.
  const store = new ResilientStore(new RedisStore(redis.url, prefix, { maxSize: Infinity, maxEntrySize: 1 << 20 }, silentLogger), log, {
    backoffMs: 0,
    onHealth: (op, up) => void transitions.push([op, up]),
  })
  t.after(() => store.close())
  await store.ping()
  await store.set('cached', entry(), 60_000)
  await fillUp()
  for (let i = 0; i < 5; i++) {
    await store.set(`new-${i}`, entry(), 60_000)
    assert.ok(await store.get('cached'))
  }
  assert.deepEqual(transitions, [['write', false]])
  assert.equal(store.up('read'), true)
  assert.equal(lines.filter((l) => /failed/.test(l.msg)).length, 1, 'one log line for the outage')
  await makeRoom()
  await store.set('after', entry(), 60_000)
  assert.deepEqual(transitions, [['write', false], ['write', true]])
  assert.ok(await store.get('after'), 'written once Redis has room again')
  assert.equal(lines.filter((l) => /recovered/.test(l.msg)).length, 1)
})
