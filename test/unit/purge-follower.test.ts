/**
 * A process that cannot read its store's purge log (cut off from Redis, a SQLite file it cannot read)
 * keeps nothing in its hot tier until it can again (issue 33): once it has been silent long enough, a
 * purge no longer waits for it, so a copy it kept meanwhile would outlive a purge that reported success.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryStore } from '../../sidecar/cache/memory-store.js'
import { TieredStore } from '../../sidecar/cache/tiered-store.js'
import { ResponseCache } from '../../sidecar/cache/response-cache.js'
import type { PurgeFeed } from '../../sidecar/cache/open-store.js'
import { createPurger, PURGE_FEED_MS } from '../../sidecar/server/purge.js'
import { silentLogger } from '../helpers/sidecar.js'
import { waitUntil } from '../helpers/wait.js'

const limits = { maxSize: 1 << 20, maxEntrySize: 1 << 16 }
const variant = (href: string) => ({ href, width: 64, quality: 75, mimeType: 'image/webp' })
const produce = (bytes: string) => async () => ({ buffer: Buffer.from(bytes), contentType: 'image/webp', maxAge: 3600, etag: bytes, upstreamEtag: bytes })

/** A purge log that answers, or fails as a store that cannot be reached does. */
function feed(): { feed: PurgeFeed; reachable: (on: boolean) => void; reads: () => number } {
  let up = true
  let reads = 0
  const read = <T>(value: T) => {
    reads++
    return up ? Promise.resolve(value) : Promise.reject(new Error('redis is not connected'))
  }
  return {
    feed: { hot: true, mark: () => read('0'), after: (mark) => read({ mark, selectors: [], completed: [] }) },
    reachable: (on) => (up = on),
    reads: () => reads,
  }
}

test('while the purge log cannot be read, nothing is kept in the hot tier; once it can, the hot tier is used again', async (t) => {
  const tiered = new TieredStore(new MemoryStore(limits, 'hot'), new MemoryStore(limits))
  const cache = new ResponseCache(tiered, { minimumCacheTTL: 60, jobTimeoutMs: 5000, log: silentLogger })
  const log = feed()
  const purger = createPurger({ cache, broadcasts: [], basePath: '', log: silentLogger, feed: log.feed, silentMs: 300 })
  t.after(() => purger.close())

  await cache.get('a', produce('a1'), undefined, variant('/a.png'))
  assert.ok(tiered.peek!('a'), 'a produced entry is kept hot while the log is read')

  log.reachable(false)
  await waitUntil(() => tiered.peek!('a') === undefined, 'the hot tier dropped after the log was silent', 300 + 3 * PURGE_FEED_MS)
  // Produced and read while cut off: served, stored in the shared store, not kept in memory.
  assert.equal((await cache.get('b', produce('b1'), undefined, variant('/b.png'))).result, 'MISS')
  assert.equal(tiered.peek!('b'), undefined, 'an entry produced while cut off was kept hot')
  assert.equal((await cache.get('a', produce('a2'), undefined, variant('/a.png'))).result, 'HIT')
  assert.equal(tiered.peek!('a'), undefined, 'an entry read from the store while cut off was kept hot')

  log.reachable(true)
  const before = log.reads()
  await waitUntil(() => log.reads() > before + 1, 'the log read again', 3 * PURGE_FEED_MS)
  await cache.get('a', produce('a3'), undefined, variant('/a.png'))
  assert.ok(tiered.peek!('a'), 'the hot tier is used again once the log is read')
})
