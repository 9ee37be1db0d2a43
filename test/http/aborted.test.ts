/**
 * A request the client gives up on before the answer is still recorded: one log line with status
 * 499 and `aborted`, and the request duration histogram under `status_class="aborted"`. These are
 * the slow requests an operator looks for.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { request as httpRequest } from 'node:http'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'
import { waitUntil } from '../helpers/wait.js'
import { image } from '../helpers/image-url.js'

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(() => upstream.close())

test('a request aborted by the client gets a log line (499, aborted) and a duration sample', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'info' }, new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>)
      callback()
    },
  }))
  const sidecar = testSidecar({ frontend: upstream.url, logger })
  const server = await sidecar.listen(0, '127.0.0.1')
  t.after(async () => {
    server.close()
    server.closeAllConnections()
    await sidecar.close()
  })
  const path = image('/slow/1500/png/chelsea.png', 64)
  const client = httpRequest(`${server.url}${path}`, { agent: false })
  client.on('error', () => {})
  client.end()
  await waitUntil(() => upstream.requests.some((r) => r.url === '/slow/1500/png/chelsea.png'), 'the sidecar to ask the upstream')
  client.destroy()

  await waitUntil(() => lines.some((l) => l.msg === 'request'), 'the request log line')
  const line = lines.find((l) => l.msg === 'request')!
  assert.equal(line.status, 499)
  assert.equal(line.aborted, true)
  assert.equal(line.url, path)
  const text = await (await fetch(`${server.url}/metrics`)).text()
  assert.equal(metric(text, 'next_image_sidecar_request_duration_seconds_count', { status_class: 'aborted' }), 1)
})
