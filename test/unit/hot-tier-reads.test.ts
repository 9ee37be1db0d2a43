/** The hot tier in front of a store, as the hit path asks it: a request counts once in its admission. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryStore } from '../../sidecar/cache/memory-store.js'
import { TieredStore } from '../../sidecar/cache/tiered-store.js'
import type { CacheEntry, CacheStore } from '../../sidecar/cache/types.js'

const entry: CacheEntry = { buffer: Buffer.from('bytes'), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 60_000, etag: 'e', upstreamEtag: 'e' }

/** A networked store (Redis): no synchronous lookup, so the hit path peeks the hot tier, then reads below it. */
function remote(): CacheStore {
  const held = new Map<string, CacheEntry>([['k', entry]])
  return { name: 'remote', get: async (key) => held.get(key), set: async (key, e) => void held.set(key, e), delete: async (key) => void held.delete(key), ping: async () => undefined, close: async () => undefined }
}

test('a request the hot tier misses, read from the store below it, is counted once by the hot tier', async () => {
  const hot = new MemoryStore({ maxSize: 1 << 20, maxEntrySize: 1 << 16 }, 'hot', { admission: true })
  const tiered = new TieredStore(hot, remote())
  assert.equal(tiered.peek!('k'), undefined)
  assert.equal(await tiered.getBelowHot('k'), entry)
  assert.deepEqual(hot.stats, { hits: 0, misses: 1, rejected: 0 })
  assert.equal(tiered.peek!('k'), entry, 'kept hot once read')
})

test('an entry larger than the whole store replaces nothing and leaves no source index behind', async () => {
  const store = new MemoryStore({ maxSize: 100, maxEntrySize: 1 << 20 })
  const variant = { href: '/a.png', width: 64, quality: 75, mimeType: 'image/webp' }
  await store.set('k', { ...entry, buffer: Buffer.alloc(10), variant }, 60_000)
  await store.set('k', { ...entry, buffer: Buffer.alloc(200), variant }, 60_000)
  assert.equal(await store.get('k'), undefined, 'the older value outlived the refused one')
  assert.equal((store as unknown as { bySource: Map<string, Set<string>> }).bySource.size, 0, 'a source indexed with nothing held')
})
