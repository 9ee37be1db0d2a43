/**
 * What a HIT from a store below the hot tier costs (issue #36): a read writes nothing to the store
 * (the LRU's bookkeeping is batched), and an entry's stored form is parsed once, not once per read
 * (the response headers are then memoised per form: see formOf).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SqliteStore, nodeSqliteDriver, type SqliteDriver } from '../../sidecar/cache/sqlite-store.js'
import { RedisStore } from '../../sidecar/cache/redis-store.js'
import type { CacheEntry } from '../../sidecar/cache/types.js'
import { silentLogger } from '../helpers/sidecar.js'
import { PrivateRedis } from '../helpers/redis.js'
import { waitUntil } from '../helpers/wait.js'

const entry = (etag: string): CacheEntry => ({ buffer: Buffer.alloc(30_000, 7), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 60_000, etag, upstreamEtag: `u-${etag}`, validators: {}, variant: { href: '/a.jpg', width: 640, quality: 75, mimeType: 'image/webp' } })
const KEY = 'k'.repeat(43)

/** Calls of JSON.parse while `run` runs (the metadata of a stored entry is JSON). */
async function parsesDuring(run: () => Promise<void>): Promise<number> {
  const parse = JSON.parse
  let calls = 0
  JSON.parse = function (this: unknown, ...args: Parameters<typeof JSON.parse>) {
    calls++
    return parse.apply(this, args)
  } as typeof JSON.parse
  try {
    await run()
  } finally {
    JSON.parse = parse
  }
  return calls
}

/** The node:sqlite driver, with every statement that is not a plain read of a value counted. */
function countingDriver(): { driver: SqliteDriver; writes: string[] } {
  const writes: string[] = []
  const driver: SqliteDriver = async (path, options) => {
    const adapter = await nodeSqliteDriver(path, options)
    const query = adapter.query.bind(adapter)
    const transaction = adapter.transaction.bind(adapter)
    adapter.query = (sql, ...params) => {
      if (!/^\s*(SELECT|PRAGMA (?!incremental_vacuum))/i.test(sql)) writes.push(sql.trim().split('\n')[0]!)
      return query(sql, ...params)
    }
    adapter.transaction = (steps) => {
      writes.push(...steps.map(([sql]) => sql.trim().split('\n')[0]!))
      return transaction(steps)
    }
    return adapter
  }
  return { driver, writes }
}

test('SQLite: 200 hits (get and the hit path’s peek) write nothing to the file; their reads are recorded in one statement later', async () => {
  const { driver, writes } = countingDriver()
  const store = new SqliteStore(join(mkdtempSync(join(tmpdir(), 'nis-store-hits-')), 'cache.sqlite'), { maxSize: 50e6, maxEntrySize: 1e6 }, silentLogger, undefined, driver)
  try {
    await store.set(KEY, entry('a'), 600_000)
    // Opening the file schedules one vacuum (200 ms later): a write of the open's, not of the hits.
    await waitUntil(() => writes.includes('PRAGMA incremental_vacuum'), 'the vacuum the open scheduled', 10_000, 10)
    writes.length = 0
    for (let i = 0; i < 100; i++) assert.equal((await store.get(KEY))?.etag, 'a')
    for (let i = 0; i < 100; i++) assert.equal(store.peek(KEY)?.etag, 'a')
    assert.deepEqual(writes, [], 'no statement but reads while hits are served')
  } finally {
    await store.close()
  }
  assert.equal(writes.filter((sql) => /^UPDATE .*_lru SET used/.test(sql)).length, 1, `one batched LRU update on close: ${writes.join(' | ')}`)
})

test('SQLite: an entry’s stored form is parsed once for any number of reads, and again once it is replaced', async () => {
  const store = new SqliteStore(join(mkdtempSync(join(tmpdir(), 'nis-store-hits-')), 'cache.sqlite'), { maxSize: 50e6, maxEntrySize: 1e6 }, silentLogger)
  try {
    await store.set(KEY, entry('a'), 600_000)
    await store.get(KEY)
    const parses = await parsesDuring(async () => {
      for (let i = 0; i < 100; i++) {
        const hit = await store.get(KEY)
        assert.equal(hit?.etag, 'a')
        assert.equal(hit?.buffer.byteLength, 30_000)
      }
      for (let i = 0; i < 100; i++) assert.equal(store.peek(KEY)?.etag, 'a')
    })
    assert.equal(parses, 0, 'the metadata of an entry read before is not parsed again')
    // Replaced (a refresh, another process's write): the new form is read, not the kept one.
    await store.set(KEY, { ...entry('b'), contentType: 'image/avif', buffer: Buffer.alloc(1000, 9) }, 600_000)
    const replaced = store.peek(KEY)
    assert.equal(replaced?.etag, 'b')
    assert.equal(replaced?.contentType, 'image/avif')
    assert.deepEqual(replaced?.buffer, Buffer.alloc(1000, 9))
    await store.delete(KEY)
    assert.equal(store.peek(KEY), undefined)
  } finally {
    await store.close()
  }
})

test('Redis: an entry’s stored form is parsed once for any number of reads, and again once it is replaced', async () => {
  const redis = await PrivateRedis.start()
  const store = new RedisStore(redis.url, 'nis-store-hits:', { maxSize: Infinity, maxEntrySize: 1e6 }, silentLogger)
  try {
    await store.connected()
    await store.set(KEY, entry('a'), 600_000)
    await store.get(KEY)
    const parses = await parsesDuring(async () => {
      for (let i = 0; i < 100; i++) {
        const hit = await store.get(KEY)
        assert.equal(hit?.etag, 'a')
        assert.equal(hit?.buffer.byteLength, 30_000)
      }
    })
    assert.equal(parses, 0, 'the metadata of an entry read before is not parsed again')
    await store.set(KEY, { ...entry('b'), buffer: Buffer.alloc(1000, 9) }, 600_000)
    const replaced = await store.get(KEY)
    assert.equal(replaced?.etag, 'b')
    assert.deepEqual(replaced?.buffer, Buffer.alloc(1000, 9))
  } finally {
    await store.close()
    await redis.kill()
  }
})
