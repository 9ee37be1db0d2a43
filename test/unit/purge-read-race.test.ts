/**
 * A purge logged between a request's read of a stale entry and the start of that entry's background
 * refresh: when the refresh then fails (the source deleted, then purged), the entry it read must not be
 * written back as Next's "keep the previous entry" (review find: its purge mark was taken after the purge).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryStore } from '../../sidecar/cache/memory-store.js'
import { ResponseCache } from '../../sidecar/cache/response-cache.js'
import type { CacheEntry } from '../../sidecar/cache/types.js'
import { silentLogger } from '../helpers/sidecar.js'

const variant = { href: '/hero.png', width: 64, quality: 75, mimeType: 'image/webp' }
const stale: CacheEntry = { buffer: Buffer.from('old bytes'), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() - 1000, etag: 'old', upstreamEtag: 'old', variant }

test('a failed refresh does not write back an entry a purge removed after it was read', async () => {
  const store = new MemoryStore({ maxSize: 1 << 20, maxEntrySize: 1 << 16 })
  await store.set('k', stale, 60_000)
  let cache!: ResponseCache
  // The store answers the read with the stale entry, and the purge lands just after (before the refresh starts).
  const racing = Object.assign(Object.create(store) as MemoryStore, {
    async get(key: string) {
      const entry = await store.get(key)
      if (entry) await cache.purge({ sources: ['/hero.png'] })
      return entry
    },
  })
  cache = new ResponseCache(racing, { minimumCacheTTL: 60, jobTimeoutMs: 5000, log: silentLogger })
  const answered = await cache.get('k', async () => Promise.reject(new Error('the source was deleted')), undefined, variant)
  assert.equal(answered.result, 'STALE')
  await cache.settled()
  assert.equal(await store.get('k'), undefined, 'the purged entry was written back by the failed refresh')
})
