/** --cache-key-ignore-params: many signed URLs of one image are one cache entry and one transform. */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import request from 'supertest'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { image } from '../helpers/image-url.js'

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

const signed = (i: number) => `${upstream.url}/corpus/photo-jpeg/rocket.jpg?X-Amz-Date=2026010${i}&X-Amz-Signature=${'ab'.repeat(8)}${i}&t=${1000 + i}`
const transforms = async (s: ReturnType<typeof testSidecar>) => metric((await request(s.app).get('/metrics')).text, 'next_image_sidecar_transforms_total')

test('ten signed URLs of one image: one transform, one fetch with the full URL, nine HITs', async () => {
  const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port), cacheKeyIgnoreParams: ['X-Amz-*', 't'] })
  try {
    const seen = upstream.requests.length
    const results: string[] = []
    for (let i = 0; i < 10; i++) {
      const res = await request(s.app).get(image(signed(i), 640)).set('Accept', 'image/webp')
      assert.equal(res.status, 200)
      results.push(String(res.headers['x-nextjs-cache']))
    }
    assert.deepEqual(results, ['MISS', ...Array(9).fill('HIT')])
    assert.equal(await transforms(s), 1)
    const fetched = upstream.requests.slice(seen)
    assert.equal(fetched.length, 1)
    assert.equal(fetched[0]!.url, new URL(signed(0)).pathname + new URL(signed(0)).search, 'the fetch uses the full URL')
    // A purge names the source without its signature.
    assert.equal((await s.purge({ sources: [`${upstream.url}/corpus/photo-jpeg/rocket.jpg`] })).removed, 1)
  } finally {
    await s.close()
  }
})

test('off by default: every signed URL is its own entry (as in Next)', async () => {
  const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port) })
  try {
    for (let i = 0; i < 3; i++) assert.equal((await request(s.app).get(image(signed(i), 640)).set('Accept', 'image/webp')).headers['x-nextjs-cache'], 'MISS')
    assert.equal(await transforms(s), 3)
  } finally {
    await s.close()
  }
})
