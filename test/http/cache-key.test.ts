/**
 * One request cannot poison another's cache entry: `url=/banner.png?v=120&w=48` and
 * `url=/banner.png?v=1&w=2048` share Next's cache key (href, width and quality hashed back to
 * back); here each is its own variant. Next 15's default config (queries allowed on local images).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import request from 'supertest'
import sharp from 'sharp'
import { corpusFile, startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import type { Sidecar } from '../../sidecar/server/app.js'

let frontend: UpstreamServer
let sidecar: Sidecar

before(async () => {
  frontend = await startUpstream()
  const photo = await sharp(corpusFile('photo-jpeg/rocket.jpg')).resize(2400).png().toBuffer()
  frontend.mutable.set('banner.png', { status: 200, body: photo, headers: { 'content-type': 'image/png' } })
  sidecar = testSidecar({ frontend: frontend.url, nextVersion: 15 })
})

after(async () => {
  await sidecar.close()
  await frontend.close()
})

test('a variant whose href, width and quality concatenate like another\'s is a MISS of its own', async () => {
  const small = await request(sidecar.app).get('/_next/image').query({ url: '/mutable/banner.png?v=120', w: 48, q: 75 }).set('accept', 'image/webp')
  assert.equal(small.status, 200)
  assert.equal((await sharp(small.body).metadata()).width, 48)
  const large = await request(sidecar.app).get('/_next/image').query({ url: '/mutable/banner.png?v=1', w: 2048, q: 75 }).set('accept', 'image/webp')
  assert.equal(large.status, 200)
  assert.equal(large.headers['x-nextjs-cache'], 'MISS')
  assert.equal((await sharp(large.body).metadata()).width, 2048)
})
