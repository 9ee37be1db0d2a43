/** The hot tier's frequency-aware admission (TinyLFU): the sketch, the decision, and MemoryStore with it on. */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { admits, FrequencySketch, MAX_VICTIMS, sketchFor } from '../../sidecar/cache/admission.js'
import { MemoryStore } from '../../sidecar/cache/memory-store.js'
import type { CacheEntry } from '../../sidecar/cache/types.js'

const entry = (bytes: number, tag = 'x', href?: string): CacheEntry =>
  ({
    buffer: Buffer.alloc(bytes, tag),
    contentType: 'image/webp',
    etag: tag,
    expireAt: Date.now() + 60_000,
    maxAge: 60,
    ...(href ? { variant: { href, width: 64, quality: 75, mimeType: 'image/webp' } } : {}),
  }) as unknown as CacheEntry

/** What TieredStore does for a key the hot tier lacks: asks the hot tier, then puts the store's entry there. */
async function read(store: MemoryStore, key: string, bytes = 100, href?: string) {
  const held = await store.get(key)
  if (held === undefined) await store.set(key, entry(bytes, key, href), 60_000)
  return held !== undefined
}

describe('FrequencySketch', () => {
  test('counts accesses up to 15, unseen keys 0', () => {
    const sketch = new FrequencySketch(1024)
    for (let i = 0; i < 5; i++) sketch.increment('a')
    assert.equal(sketch.frequency('a'), 5)
    assert.equal(sketch.frequency('never'), 0)
    for (let i = 0; i < 100; i++) sketch.increment('b')
    assert.equal(sketch.frequency('b'), 15)
  })

  test('ages: after sampleSize increments the counts are halved', () => {
    const sketch = new FrequencySketch(16)
    for (let i = 0; i < 12; i++) sketch.increment('hot')
    const before = sketch.frequency('hot')
    assert.equal(before, 12)
    // The rest of the sample (one-off keys) triggers the halving.
    for (let i = 0; i < sketch.sampleSize; i++) sketch.increment(`k${i}`)
    assert.ok(sketch.frequency('hot') <= before / 2 + 1, `${sketch.frequency('hot')} after aging`)
    assert.ok(sketch.frequency('hot') >= 5)
  })

  test('bounded memory: the same bytes after a million distinct keys; sized from the tier, capped', () => {
    const sketch = sketchFor(64 * 1024 ** 2)
    const bytes = sketch.bytes
    for (let i = 0; i < 1_000_000; i++) sketch.increment(`key-${i}`)
    assert.equal(sketch.bytes, bytes)
    // 64 MiB at 8 KiB an entry: 8,192 entries, 4 rows of 32,768 one-byte counters (0.2% of the tier).
    assert.equal(bytes, 4 * 32768)
    assert.ok(sketchFor(1024 ** 4).bytes <= 4 * 4 * (1 << 18), 'capped')
    assert.ok(sketchFor(1).bytes > 0)
  })
})

describe('admits', () => {
  test('room left: admitted whatever its frequency; full: only more frequent than every victim', () => {
    const sketch = new FrequencySketch(1024)
    assert.equal(admits(sketch, 'new', 0, []), true)
    for (let i = 0; i < 3; i++) sketch.increment('new')
    for (let i = 0; i < 2; i++) sketch.increment('cold')
    for (let i = 0; i < 9; i++) sketch.increment('hot')
    assert.equal(admits(sketch, 'new', 100, [['cold', 100]]), true)
    assert.equal(admits(sketch, 'new', 150, [['cold', 100], ['hot', 100]]), false, 'the second victim is more frequent')
    assert.equal(admits(sketch, 'new', 100, [['cold', 100], ['hot', 100]]), true, 'the first victim frees enough')
    for (let i = 0; i < 1; i++) sketch.increment('cold')
    assert.equal(admits(sketch, 'new', 100, [['cold', 100]]), false, 'a tie keeps what is held')
    assert.equal(admits(sketch, 'unseen', 100, []), false, 'a key never asked for is not admitted into a full tier')
  })

  test('compares at most MAX_VICTIMS victims', () => {
    const sketch = new FrequencySketch(1024)
    for (let i = 0; i < 5; i++) sketch.increment('big')
    const victims = Array.from({ length: 20 }, (_, i) => [`v${i}`, 1] as const)
    let compared = 0
    const counted = (function* () {
      for (const v of victims) {
        compared++
        yield v
      }
    })()
    assert.equal(admits(sketch, 'big', 1000, counted), true)
    assert.equal(compared, MAX_VICTIMS)
  })
})

describe('MemoryStore with admission', () => {
  const TIER = 10 * 100 // ten 100-byte entries

  /** Five popular keys asked for four times, then a scan of 500 one-off keys with the popular ones still asked for now and then. */
  async function scan(store: MemoryStore) {
    const hot = Array.from({ length: 5 }, (_, i) => `hot-${i}`)
    for (let round = 0; round < 4; round++) for (const key of hot) await read(store, key)
    let hotHits = 0
    for (let i = 0; i < 500; i++) {
      await read(store, `scan-${i}`)
      if (i % 20 === 19) for (const key of hot) if (await read(store, key)) hotHits++
    }
    return { hotHits, asked: (500 / 20) * hot.length, held: hot.filter((key) => store.peek(key)).length }
  }

  test('a scan of one-off keys does not evict the keys asked for often', async () => {
    const store = new MemoryStore({ maxSize: TIER, maxEntrySize: TIER }, 'hot', { admission: true })
    const { hotHits, asked, held } = await scan(store)
    assert.equal(held, 5, 'flushed by the scan')
    assert.equal(hotHits, asked, 'every ask of a popular key during the scan a hit')
    assert.ok(store.size <= TIER)
    assert.ok(store.stats.rejected > 400)
  })

  test('plain LRU (no admission): the same scan flushes them, every ask of them during it a miss', async () => {
    const { hotHits } = await scan(new MemoryStore({ maxSize: TIER, maxEntrySize: TIER }))
    assert.equal(hotHits, 0)
  })

  test('a key asked for more often than what it displaces is admitted; one asked for once is not', async () => {
    const store = new MemoryStore({ maxSize: TIER, maxEntrySize: TIER }, 'hot', { admission: true })
    for (let i = 0; i < 10; i++) await read(store, `filler-${i}`)
    assert.equal(store.size, TIER)
    assert.equal(await read(store, 'once'), false)
    assert.equal(store.peek('once'), undefined, 'a one-off does not displace an entry asked for as often')
    // Asked for again (the store answered each time): now more frequent than the least recently used filler.
    for (let i = 0; i < 2; i++) await read(store, 'popular')
    assert.ok(store.peek('popular'), 'admitted on its second ask')
    assert.equal(store.size, TIER)
  })

  test('under Zipf, more hits than plain LRU in the same bytes', async (t) => {
    const catalogue = 2000
    const weights = Array.from({ length: catalogue }, (_, i) => 1 / (i + 1))
    const total = weights.reduce((a, b) => a + b, 0)
    const cdf: number[] = []
    let acc = 0
    for (const w of weights) cdf.push((acc += w / total))
    let seed = 42
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32)
    const draw = () => {
      const u = random()
      let lo = 0
      let hi = catalogue - 1
      while (lo < hi) {
        const mid = (lo + hi) >>> 1
        if (cdf[mid]! < u) lo = mid + 1
        else hi = mid
      }
      return lo
    }
    const trace = Array.from({ length: 100_000 }, () => `variant-${(draw() * 7919) % catalogue}`)
    const ratio = async (store: MemoryStore) => {
      let hits = 0
      for (const key of trace) if (await read(store, key)) hits++
      return hits / trace.length
    }
    const tier = { maxSize: 200 * 100, maxEntrySize: 100 } // a tenth of the catalogue
    const lru = await ratio(new MemoryStore(tier))
    const tinyLfu = await ratio(new MemoryStore(tier, 'hot', { admission: true }))
    t.diagnostic(`hit ratio: admission ${tinyLfu.toFixed(3)}, LRU ${lru.toFixed(3)}`)
    assert.ok(tinyLfu > lru + 0.05, `admission ${tinyLfu.toFixed(3)} vs LRU ${lru.toFixed(3)}`)
  })

  test('a key held is always replaced, even by a value admission would turn away', async () => {
    const store = new MemoryStore({ maxSize: TIER, maxEntrySize: TIER }, 'hot', { admission: true })
    await store.set('k', entry(100, 'old'), 60_000)
    // Held past its freshness (TieredStore reads it as stale and puts the store's fresher one here).
    await store.set('s', { ...entry(100, 'old'), expireAt: Date.now() - 1 }, 60_000)
    for (let i = 0; i < 8; i++) for (let n = 0; n < 5; n++) await read(store, `filler-${i}`)
    assert.equal(store.size, TIER)
    // Full, 'k' and 's' the least recently used and never asked for: new keys like them are rejected.
    await store.set('new', entry(100, 'new'), 60_000)
    assert.equal(store.peek('new'), undefined)
    await store.set('k', entry(100, 'new'), 60_000)
    assert.equal(store.peek('k')?.etag, 'new')
    await store.set('s', entry(100, 'new'), 60_000)
    assert.equal(store.peek('s')?.etag, 'new')
    // Too large to hold: the key is dropped, not kept at its old value (as without admission).
    await store.set('k', entry(TIER + 1, 'huge'), 60_000)
    assert.equal(store.peek('k'), undefined)
  })

  test('a rejected entry is not held nor indexed: purge and delete see only what is held', async () => {
    const store = new MemoryStore({ maxSize: TIER, maxEntrySize: TIER }, 'hot', { admission: true })
    for (let i = 0; i < 10; i++) for (let n = 0; n < 3; n++) await read(store, `held-${i}`, 100, `/img/held-${i}.jpg`)
    for (let i = 0; i < 50; i++) await read(store, `scan-${i}`, 100, `/img/scan-${i}.jpg`)
    assert.equal(store.indexedSources, 10, 'only the held entries are indexed')
    assert.deepEqual(await store.purge({ prefix: '/img/scan-' }), [])
    const purged = await store.purge({ sources: ['/img/held-3.jpg'] })
    assert.deepEqual(purged.map((e) => e.key), ['held-3'])
    assert.equal(store.peek('held-3'), undefined)
    await store.delete('held-4')
    assert.equal(store.peek('held-4'), undefined)
    assert.equal(store.indexedSources, 8)
    // Room again: a new key is admitted at once.
    await read(store, 'after-purge', 100, '/img/after.jpg')
    assert.ok(store.peek('after-purge'))
    assert.equal((await store.purge({ all: true })).length, 9)
    assert.equal(store.size, 0)
  })
})
