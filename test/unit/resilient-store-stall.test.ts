/**
 * A store's answer that arrived while the event loop was blocked (a long GC, a synchronous stretch) past
 * the store's timeout is taken, not reported as a timeout: the blocked loop, not the store, was late, and
 * a timeout takes the store down for every request of the back-off.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect } from 'node:net'
import { spawn } from 'node:child_process'
import { ResilientStore } from '../../sidecar/cache/resilient-store.js'
import type { CacheEntry, CacheStore } from '../../sidecar/cache/types.js'
import { silentLogger } from '../helpers/sidecar.js'

const entry: CacheEntry = { buffer: Buffer.from('bytes'), contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 60_000, etag: 'e', upstreamEtag: 'e' }

test('an answer that arrived during a blocked event loop longer than the timeout is taken', async (t) => {
  // A store in another process that answers each request 50 ms after it, on a connection made beforehand.
  const server = spawn(process.execPath, ['-e', "require('node:net').createServer((s) => s.on('data', () => setTimeout(() => s.write('x'), 50))).listen(0, '127.0.0.1', function () { console.log(this.address().port) })"], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => server.kill())
  const [line] = (await once(server.stdout!, 'data')) as [Buffer]
  const socket = connect(Number(line.toString().trim()), '127.0.0.1')
  await once(socket, 'connect')
  t.after(() => socket.destroy())
  const store: CacheStore = {
    name: 'socket',
    async get() {
      socket.write('?')
      await once(socket, 'data')
      return entry
    },
    set: async () => undefined,
    delete: async () => undefined,
    ping: async () => undefined,
    close: async () => undefined,
  }
  const resilient = new ResilientStore(store, silentLogger, { timeoutMs: 200 })
  const read = resilient.get('k')
  // Once the request is sent, the loop is blocked for five times the timeout: the answer (50 ms) arrives
  // meanwhile, with room for a loaded machine to schedule the other process late.
  await new Promise<void>((resolve) =>
    setImmediate(() => {
      const until = performance.now() + 1000
      while (performance.now() < until);
      resolve()
    }),
  )
  assert.equal(await read, entry, 'the answer was dropped as a timeout')
  assert.equal(resilient.up('read'), true)
})
