/** The hot tier with frequency-aware admission, in a sidecar on SQLite: popular images stay in process through a scan, and purge still reaches them. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import request from 'supertest'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { image } from '../helpers/image-url.js'
import type { Sidecar } from '../../sidecar/server/app.js'

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

const OLD = corpusFile('photo-jpeg/rocket.jpg')
const NEW = corpusFile('photo-jpeg/garden.jpg')
const jpeg = (body: Buffer) => ({ status: 200, body, headers: { 'content-type': 'image/jpeg' } })

async function get(s: Sidecar, src: string) {
  const res = await request(s.app).get(image(src, 64)).set('Accept', 'image/webp').buffer(true).parse((r, cb) => {
    const chunks: Buffer[] = []
    r.on('data', (c: Buffer) => chunks.push(c))
    r.on('end', () => cb(null, Buffer.concat(chunks)))
  })
  assert.equal(res.status, 200, `${src} answered ${res.status}`)
  return { cache: String(res.headers['x-nextjs-cache']), body: res.body as Buffer }
}

test('SQLite with a small hot tier: a popular image stays hot through a scan of one-off images, and a purge still removes it', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'nis-hot-admission-')), 'cache.sqlite')
  const popular = '/mutable/admission-popular'
  const scanned = Array.from({ length: 40 }, (_, i) => `/mutable/admission-scan-${i}`)
  for (const src of [popular, ...scanned]) upstream.mutable.set(src.slice('/mutable/'.length), jpeg(OLD))
  const probe = testSidecar({ frontend: upstream.url })
  const bytes = (await get(probe, popular)).body.byteLength
  await probe.close()
  // Room for four of these variants: the scan is ten times the tier.
  const s = testSidecar({ frontend: upstream.url, cache: `sqlite://${path}`, hotCacheSize: 4 * bytes + bytes / 2 })
  await s.store.ping()
  try {
    const first = await get(s, popular)
    assert.equal(first.cache, 'MISS')
    for (let i = 0; i < 5; i++) assert.equal((await get(s, popular)).cache, 'HIT')
    for (const src of scanned) assert.equal((await get(s, src)).cache, 'MISS', src)
    // Every image is in the SQLite file; with its rows gone, a HIT can only come from the hot tier.
    const db = new DatabaseSync(path)
    try {
      db.exec('DELETE FROM next_image_cache')
    } finally {
      db.close()
    }
    const again = await get(s, popular)
    assert.equal(again.cache, 'HIT', 'the scan flushed the popular image from the hot tier')
    assert.deepEqual(again.body, first.body)
    // The scan's last images were turned away (a one-off does not displace a popular image): not held either.
    assert.equal((await get(s, scanned.at(-1)!)).cache, 'MISS')

    // Purge: the hot copy goes with the source, and the next request fetches the new bytes.
    upstream.mutable.set('admission-popular', jpeg(NEW))
    const purged = await s.purge({ sources: [popular] })
    assert.equal(purged.removed, 1, JSON.stringify(purged))
    const after = await get(s, popular)
    assert.equal(after.cache, 'MISS')
    assert.notDeepEqual(after.body, first.body)
    assert.equal((await get(s, popular)).cache, 'HIT')
    assert.deepEqual((await get(s, popular)).body, after.body)
  } finally {
    await s.close()
  }
})
