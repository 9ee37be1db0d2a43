/**
 * A purge argument is normalised as the request path normalises `url=`: every spelling that reaches a
 * stored entry purges it, and every spelling of a source requested is purged by the plain one. Found by
 * review: absolute sources purged 0 when spelled as a browser or CMS sends them (`a b.png`,
 * `HTTP://…`, `é` unescaped), the printed CDN URLs were double-encoded, and relative spellings (#frag,
 * a trailing ?, /./, %61, ..) survived a purge of the source.
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import request from 'supertest'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { localRemoteConfig, testSidecar } from '../helpers/sidecar.js'
import { image } from '../helpers/image-url.js'
import { canonicalSource } from '../../sidecar/cache/key.js'
import { parsePurgeRequest } from '../../sidecar/cache/purge-request.js'
import type { Sidecar } from '../../sidecar/server/app.js'

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
  for (const key of ['a%20b.png', 'caf%C3%A9.png', 'plain.png']) upstream.mutable.set(key, { status: 200, body: corpusFile('png/chelsea.png'), headers: { 'content-type': 'image/png' } })
})
after(() => upstream.close())

const get = async (s: Sidecar, src: string) => {
  const res = await request(s.app).get(image(src, 640)).set('Accept', 'image/webp')
  assert.equal(res.status, 200, `${src}: ${res.status} ${res.text}`)
  return String(res.headers['x-nextjs-cache'])
}

test('canonicalSource: the spellings of one source are one', () => {
  for (const spelling of ['/a.png', '/a.png#frag', '/a.png?', '/./a.png', '/%61.png', '/b/../a.png', '/b/%2e%2e/a.png']) assert.equal(canonicalSource(spelling), '/a.png', spelling)
  assert.equal(canonicalSource('HTTP://Host.Example/a b/café.png?x=1#f'), 'http://host.example/a%20b/caf%C3%A9.png?x=1')
  assert.equal(canonicalSource('https://h.example/a%c3%a9.png'), 'https://h.example/a%C3%A9.png')
  assert.equal(canonicalSource('/a.png?v=1&w=%7e'), '/a.png?v=1&w=~')
})

describe('absolute sources', () => {
  const base = () => `http://127.0.0.1:${upstream.port}/mutable`
  const cases = () => [
    { stored: `${base()}/a%20b.png`, purgedAs: [`${base()}/a b.png`, `HTTP://127.0.0.1:${upstream.port}/mutable/a%20b.png`, `${base()}/a b.png#top`, `${base()}/./a%20b.png?`] },
    { stored: `${base()}/café.png`, purgedAs: [`${base()}/café.png`, `${base()}/caf%c3%a9.png`, `HTTP://127.0.0.1:${upstream.port}/mutable/caf%C3%A9.png`] },
  ]
  for (const index of [0, 1]) {
    test(`case ${index}: each spelling a browser or CMS sends purges the stored entry`, async () => {
      const { stored, purgedAs } = cases()[index]!
      const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port) })
      try {
        for (const spelling of purgedAs) {
          assert.equal(await get(s, stored), 'MISS', `${spelling}: stored again`)
          const result = await s.purge({ sources: [spelling] })
          assert.equal(result.removed, 1, `purge ${JSON.stringify(spelling)} removed ${result.removed}`)
        }
      } finally {
        await s.close()
      }
    })
  }

  test('the printed CDN URLs are the loader\'s: an unescaped source once escaped (not %2520), and the escaped spelling too', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: localRemoteConfig(upstream.port) })
    try {
      await get(s, `${base()}/a b.png`)
      const { urls } = await s.purge({ sources: [`${base()}/a b.png`] })
      assert.deepEqual(urls, [image(`${base()}/a b.png`, 640), image(`${base()}/a%20b.png`, 640)].sort())
      assert.ok(urls.some((u) => u.includes('a%20b.png')), JSON.stringify(urls))
    } finally {
      await s.close()
    }
  })
})

describe('relative sources', () => {
  const spellings = ['/corpus/png/chelsea.png', '/corpus/png/chelsea.png#frag', '/corpus/png/chelsea.png?', '/corpus/./png/chelsea.png', '/corpus/png/chelse%61.png', '/x/../corpus/png/chelsea.png']
  test('a purge of the source removes the entries of every spelling that was requested', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { localPatterns: [{ pathname: '**' }] } } })
    try {
      for (const src of spellings) assert.equal(await get(s, src), 'MISS', src)
      for (const src of spellings) assert.equal(await get(s, src), 'HIT', src)
      const result = await s.purge({ sources: ['/corpus/png/chelsea.png'] })
      assert.equal(result.removed, spellings.length)
      for (const src of spellings) assert.equal(await get(s, src), 'MISS', `${src} survived the purge`)
    } finally {
      await s.close()
    }
  })

  test('a purge spelled any of those ways removes the plain entry', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { localPatterns: [{ pathname: '**' }] } } })
    try {
      for (const spelling of spellings) {
        assert.equal(await get(s, '/corpus/png/chelsea.png'), 'MISS')
        assert.equal((await s.purge({ sources: [spelling] })).removed, 1, spelling)
      }
    } finally {
      await s.close()
    }
  })
})

describe('prefixes (review find: only the one spelling stored removed anything)', () => {
  test('a prefix is normalised like a source: unescaped, escaped in either case, with a space', async () => {
    const s = testSidecar({ frontend: upstream.url, nextConfig: { images: { localPatterns: [{ pathname: '**' }] } } })
    try {
      const cases = [
        { source: '/_next/img/caf%C3%A9/a.png', prefixes: ['/_next/img/café/', '/_next/img/caf%c3%a9/', '/_next/img/caf%C3%A9/', '/_next/img/./caf%C3%A9/'] },
        { source: '/_next/img/a%20b/x.png', prefixes: ['/_next/img/a b/', '/_next/img/a%20b/'] },
      ]
      for (const { source, prefixes } of cases) {
        for (const prefix of prefixes) {
          assert.equal(await get(s, source), 'MISS', `${prefix}: stored again`)
          const result = await s.purge({ prefix })
          assert.equal(result.removed, 1, `prefix ${JSON.stringify(prefix)} removed ${result.removed}`)
        }
      }
    } finally {
      await s.close()
    }
  })

  test('an absolute prefix drops the default port and lowers the origin, keeps a trailing / and adds none to a bare origin', () => {
    const prefixOf = (prefix: string) => (parsePurgeRequest({ prefix }) as { prefix: string }).prefix
    assert.equal(prefixOf('https://Host.Example:443/img/'), 'https://host.example/img/')
    assert.ok(canonicalSource('https://host.example:443/img/a.png').startsWith(prefixOf('https://Host.Example:443/img/')))
    assert.equal(prefixOf('HTTP://h.example:80'), 'http://h.example')
    assert.equal(prefixOf('https://h.example'), 'https://h.example')
    assert.equal(prefixOf('https://h.example:8443/a b/'), 'https://h.example:8443/a%20b/')
    assert.equal(prefixOf('/img/café'), '/img/caf%C3%A9')
  })
})
