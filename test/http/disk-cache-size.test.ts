/**
 * images.maximumDiskCacheSize (Next's fix for the disk-fill advisory GHSA-3x4c-7xq6-9pq8: an LRU
 * bound on the image cache, 0 turning the disk cache off) bounds the embedded SQLite store when
 * --cache-max-size is not given: the file, its WAL and -shm stay within it while serving far more;
 * 0 keeps no file at all (the hot tier only); --cache-max-size wins; the start says which bound holds.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import request from 'supertest'
import { pino } from 'pino'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { image } from '../helpers/image-url.js'
import { waitUntil } from '../helpers/wait.js'
import { describeDiskBound, diskBound } from '../../sidecar/cache/open-store.js'
import { sqliteBudget } from '../../sidecar/cache/sqlite-store.js'

const MiB = 1024 ** 2
let upstream: UpstreamServer
before(async () => (upstream = await startUpstream()))
after(async () => upstream.close())

const tmp = () => join(mkdtempSync(join(tmpdir(), 'nis-disk-size-')), 'cache.sqlite')
const size = (path: string) => (existsSync(path) ? statSync(path).size : 0)
const onDisk = (path: string) => size(path) + size(`${path}-wal`) + size(`${path}-shm`)
const QUALITIES = [40, 50, 60, 70, 75, 80, 90]
const SOURCES = ['large/elephants-3840x2160.jpg', 'photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/ladybird.jpg', 'photo-jpeg/aqua.jpg']
const WIDTHS = [1920, 3840]

/** A logger whose lines the test reads. */
function capturingLogger() {
  const lines: Array<{ msg: string; [key: string]: unknown }> = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line))
      done()
    },
  })
  return { logger: pino({ level: 'info' }, stream), lines }
}

test('diskBound: --cache-max-size, else images.maximumDiskCacheSize (0 included), else 1 GiB; and the line that says so', () => {
  assert.deepEqual(diskBound({ maxSize: 5 * MiB, maximumDiskCacheSize: 4 * MiB }), { bytes: 5 * MiB, from: '--cache-max-size' })
  assert.deepEqual(diskBound({ maximumDiskCacheSize: 4 * MiB }), { bytes: 4 * MiB, from: 'images.maximumDiskCacheSize' })
  assert.deepEqual(diskBound({ maximumDiskCacheSize: 0 }), { bytes: 0, from: 'images.maximumDiskCacheSize' })
  assert.deepEqual(diskBound({}), { bytes: 1024 ** 3, from: 'default' })
  assert.equal(describeDiskBound({ bytes: 4 * MiB, from: 'images.maximumDiskCacheSize' }, 0), 'cache: the SQLite file and its WAL are kept within 4194304 bytes (images.maximumDiskCacheSize)')
  assert.match(describeDiskBound({ bytes: 0, from: 'images.maximumDiskCacheSize' }, 64 * MiB), /no persistent store, the in-memory hot tier only/)
  assert.match(describeDiskBound({ bytes: 0, from: 'images.maximumDiskCacheSize' }, 0), /nothing is cached/)
})

test('sqliteBudget: the WAL is a sixteenth of the bound (one page to 4 MiB), counted before the entries', () => {
  assert.deepEqual(sqliteBudget(4 * MiB), { entries: Math.floor((4 * MiB - 256 * 1024) * 0.85), walBytes: 256 * 1024, walPages: 64 })
  assert.equal(sqliteBudget(1024 ** 3).walBytes, 4 * MiB)
  assert.equal(sqliteBudget(50_000).walBytes, 4096)
})

test(`maximumDiskCacheSize 4 MiB: ${SOURCES.length * WIDTHS.length * QUALITIES.length} variants leave the file, WAL and -shm within 4 MiB`, { timeout: 300_000 }, async () => {
  const path = tmp()
  const bound = 4 * MiB
  const { logger, lines } = capturingLogger()
  const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${path}`, hotCacheSize: 0, logger, nextConfig: { images: { maximumDiskCacheSize: bound, qualities: QUALITIES } } })
  let served = 0
  let peak = 0
  try {
    for (const file of SOURCES) {
      for (const w of WIDTHS) {
        for (const q of QUALITIES) {
          const res = await request(s.app).get(image(`/corpus/${file}`, w, q)).set('Accept', 'image/webp')
          assert.equal(res.status, 200)
          served += Number(res.headers['content-length'])
          peak = Math.max(peak, onDisk(path))
        }
      }
    }
    // Eviction and the vacuum after it run in the background: the bound holds once they have.
    await waitUntil(async () => onDisk(path) <= bound, `the file, WAL and -shm within ${bound} bytes (now ${onDisk(path)})`, 20_000, 50)
    process.stderr.write(`maximumDiskCacheSize ${bound}: served ${served} bytes; on disk ${onDisk(path)} (file ${size(path)}, WAL ${size(`${path}-wal`)}), peak while serving ${peak}\n`)
    assert.ok(served > bound * 2, `the working set ${served} should exceed the bound`)
    assert.ok(lines.some((l) => l.msg === 'cache: the SQLite file and its WAL are kept within 4194304 bytes (images.maximumDiskCacheSize)'), JSON.stringify(lines))
    // Still a cache: the last variant is a HIT.
    const last = await request(s.app).get(image(`/corpus/${SOURCES.at(-1)}`, WIDTHS.at(-1)!, QUALITIES.at(-1)!)).set('Accept', 'image/webp')
    assert.equal(last.headers['x-nextjs-cache'], 'HIT')
  } finally {
    await s.close()
  }
  assert.ok(onDisk(path) <= bound, `after close: ${onDisk(path)} bytes`)
})

test('maximumDiskCacheSize 0: no cache file at all; the hot tier still answers HIT, and without it nothing is kept', async () => {
  const path = tmp()
  const { logger, lines } = capturingLogger()
  const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${path}`, logger, nextConfig: { images: { maximumDiskCacheSize: 0 } } })
  try {
    const get = () => request(s.app).get(image('/corpus/photo-jpeg/rocket.jpg', 640)).set('Accept', 'image/webp')
    assert.equal((await get()).headers['x-nextjs-cache'], 'MISS')
    assert.equal((await get()).headers['x-nextjs-cache'], 'HIT')
    assert.ok(lines.some((l) => /images\.maximumDiskCacheSize is 0: no persistent store, the in-memory hot tier only/.test(l.msg)), JSON.stringify(lines))
  } finally {
    await s.close()
  }
  assert.equal(existsSync(path), false)
  assert.equal(existsSync(join(path, '..')) && existsSync(`${path}-wal`), false)

  const none = testSidecar({ frontend: upstream.url, cache: `sqlite://${path}`, hotCacheSize: 0, nextConfig: { images: { maximumDiskCacheSize: 0 } } })
  try {
    const get = () => request(none.app).get(image('/corpus/photo-jpeg/rocket.jpg', 640)).set('Accept', 'image/webp')
    assert.equal((await get()).headers['x-nextjs-cache'], 'MISS')
    assert.equal((await get()).headers['x-nextjs-cache'], 'MISS')
  } finally {
    await none.close()
  }
  assert.equal(existsSync(path), false)
})

test('--cache-max-size wins over maximumDiskCacheSize, and a store other than SQLite says the setting does not apply', async () => {
  const { logger, lines } = capturingLogger()
  const path = tmp()
  const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${path}`, cacheMaxSize: 8 * MiB, logger, nextConfig: { images: { maximumDiskCacheSize: 0 } } })
  try {
    await request(s.app).get(image('/corpus/photo-jpeg/rocket.jpg', 640)).set('Accept', 'image/webp')
  } finally {
    await s.close()
  }
  assert.ok(existsSync(path))
  assert.ok(lines.some((l) => l.msg === `cache: the SQLite file and its WAL are kept within ${8 * MiB} bytes (--cache-max-size)`), JSON.stringify(lines))

  const memory = capturingLogger()
  const m = testSidecar({ frontend: upstream.url, cache: 'memory://', logger: memory.logger, nextConfig: { images: { maximumDiskCacheSize: 4 * MiB } } })
  await m.close()
  assert.ok(memory.lines.some((l) => /bounds the embedded SQLite store only; it does not apply to this cache/.test(l.msg)), JSON.stringify(memory.lines))
})
