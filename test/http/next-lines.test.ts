/**
 * What 16.5 changes in a response, through the whole sidecar (handler, negotiation, transform,
 * headers) against the 16.4 line on the same request: imgOptSafeMode's format filter, no
 * negotiated type without formats, an upstream max-age capped at 2^31 s. Each rule is checked
 * against Next's own code in test/unit (next-oracle, transform); here, that the handler applies it.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import request from 'supertest'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import { image } from '../helpers/image-url.js'
import type { NextLine } from '../../sidecar/next/next-version.js'

const CHROME = 'image/avif,image/webp,image/apng,image/*,*/*;q=0.8'
let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

async function answer(line: NextLine, nextConfig: Record<string, unknown>, path: string, accept: string) {
  const sidecar = testSidecar({ frontend: upstream.url, nextVersion: line, nextConfig })
  try {
    const res = await request(sidecar.app).get(path).set('accept', accept)
    return { status: res.status, type: res.headers['content-type'], cacheControl: res.headers['cache-control'] }
  } finally {
    await sidecar.close()
  }
}

describe('the 16.5 line against the 16.4 line, one request each', () => {
  test('imgOptSafeMode: Chrome gets WebP where AVIF is configured first (16.4 ignores the key and sends AVIF)', async () => {
    const config = { images: { formats: ['image/avif', 'image/webp'] }, experimental: { imgOptSafeMode: true } }
    const path = image('/corpus/photo-jpeg/rocket.jpg', 64)
    assert.equal((await answer('16.5', config, path, CHROME)).type, 'image/webp')
    assert.equal((await answer('16.5', { ...config, experimental: { imgOptSafeMode: { nextImage: false } } }, path, CHROME)).type, 'image/avif')
    assert.equal((await answer('16.4', config, path, CHROME)).type, 'image/avif')
  })
  test('formats [] and a client asking for AVIF: the source type on 16.5, AVIF on 16.4', async () => {
    const config = { images: { formats: [] } }
    const path = image('/corpus/png-alpha/debian-logo-256.png', 64)
    assert.equal((await answer('16.5', config, path, 'image/avif')).type, 'image/png')
    assert.equal((await answer('16.4', config, path, 'image/avif')).type, 'image/avif')
  })
  test('an upstream max-age of 2^32 s: capped at 2^31 on 16.5, passed on by 16.4', async () => {
    const config = localRemoteConfig(upstream.port)
    const path = image(`${upstream.url}/headers/png-alpha/debian-logo-256.png?cc=${encodeURIComponent('public, max-age=4294967296')}`, 64)
    assert.equal((await answer('16.5', config, path, 'image/webp')).cacheControl, 'public, max-age=2147483648, must-revalidate')
    assert.equal((await answer('16.4', config, path, 'image/webp')).cacheControl, 'public, max-age=4294967296, must-revalidate')
  })
  test('the placeholder endpoint caps it as the optimizer does on each line', async () => {
    const config = localRemoteConfig(upstream.port)
    const path = `/_sidecar/placeholder?url=${encodeURIComponent(`${upstream.url}/headers/png-alpha/debian-logo-256.png?cc=${encodeURIComponent('public, max-age=4294967296')}`)}`
    assert.equal((await answer('16.5', config, path, '*/*')).cacheControl, 'public, max-age=2147483648, must-revalidate')
    assert.equal((await answer('16.4', config, path, '*/*')).cacheControl, 'public, max-age=4294967296, must-revalidate')
  })
})
