/**
 * A relative `url` reaches the frontend's origin and nothing else, whatever WHATWG URL parsing
 * would make of it (`\` read as `/`, tab/CR/LF dropped: `/\host/x` resolves to `http://host/x`).
 * The default configuration, both Next lines, a connection trap on another loopback address.
 * (The status and body each spelling gets are checked against the real `next start` in
 * test/parity/next-parity.test.ts.)
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer as createNetServer, type AddressInfo, type Server } from 'node:net'
import request from 'supertest'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { relativeSpellingsTo } from '../helpers/ssrf-spellings.js'
import { frontendRequestTarget } from '../../sidecar/upstream/frontend.js'
import type { Sidecar } from '../../sidecar/server/app.js'

let frontend: UpstreamServer
let trap: Server
let trapped = 0
let host: string

before(async () => {
  frontend = await startUpstream()
  trap = createNetServer((socket) => {
    trapped++
    socket.destroy()
  })
  trap.listen(0, '127.0.0.2')
  await once(trap, 'listening')
  host = `127.0.0.2:${(trap.address() as AddressInfo).port}`
})

after(async () => {
  trap.close()
  await frontend.close()
})

for (const major of [16, 15] as const) {
  describe(`Next ${major} semantics, default configuration`, () => {
    let sidecar: Sidecar
    before(() => {
      sidecar = testSidecar({ frontend: frontend.url, nextVersion: major })
    })
    after(() => sidecar.close())

    test('no spelling of a relative url connects anywhere but the frontend', async () => {
      for (const href of relativeSpellingsTo(host)) {
        const seen = frontend.requests.length
        const res = await request(sidecar.app).get('/_next/image').query({ url: href, w: 64, q: 75 })
        assert.notEqual(res.status, 200, `${JSON.stringify(href)} was served`)
        assert.equal(trapped, 0, `${JSON.stringify(href)} reached 127.0.0.2`)
        // Either validation refused it (Next 16's localPatterns refuse a query), or the frontend
        // was asked for exactly the path as written.
        if (frontend.requests.length > seen) assert.equal(frontend.requests.at(-1)!.url, frontendRequestTarget(href))
        else assert.equal(res.status, 400)
      }
    })
  })
}

describe('the request-target sent to the frontend', () => {
  test('keeps a backslash as written, for the frontend to answer (Next: its 308 normalisation)', () => {
    assert.equal(frontendRequestTarget('/\\evil/x.jpg'), '/\\evil/x.jpg')
  })

  test('percent-encodes tab, CR and LF instead of dropping them', () => {
    assert.equal(frontendRequestTarget('/\t/evil/\r\nx.jpg'), '/%09/evil/%0D%0Ax.jpg')
  })

  test('percent-encodes space and non-ASCII as a browser would', () => {
    assert.equal(frontendRequestTarget('/my photo/ü.jpg?q=ü'), '/my%20photo/%C3%BC.jpg?q=%C3%BC')
  })

  test('drops the fragment', () => {
    assert.equal(frontendRequestTarget('/a.jpg?v=1#top'), '/a.jpg?v=1')
  })

  test('leaves an ordinary path and query untouched', () => {
    assert.equal(frontendRequestTarget('/images/a.jpg?v=1&x=%2F'), '/images/a.jpg?v=1&x=%2F')
  })

  test('refuses anything that is not a path', () => {
    assert.throws(() => frontendRequestTarget('http://evil/x.jpg'))
  })
})
