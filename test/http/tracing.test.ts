/**
 * OpenTelemetry traces from the real CLI into a local OTLP/HTTP receiver: one SERVER span per image
 * request, a child of the caller's `traceparent`, with children for the cache lookup, the upstream
 * fetch (the trace carried on to the upstream), the transform and the store; a request that waits
 * for an identical one in flight gets a lock-wait span. Off unless the OTEL environment asks.
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import type { ChildProcess } from 'node:child_process'
import { startCli } from '../helpers/cli.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { waitUntil } from '../helpers/wait.js'

interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes: Array<{ key: string; value: Record<string, unknown> }>
}
const SERVER = 2
const CLIENT = 3

const attr = (span: OtlpSpan, key: string) => {
  const value = span.attributes.find((a) => a.key === key)?.value
  return value && (value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : undefined) ?? value.boolValue)
}

/** A local OTLP/HTTP (JSON) receiver: every span the sidecar exports. */
async function startReceiver(): Promise<{ url: string; spans: OtlpSpan[]; services: Set<string>; server: Server }> {
  const spans: OtlpSpan[] = []
  const services = new Set<string>()
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (req.url === '/v1/traces' && req.method === 'POST') {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as {
          resourceSpans: Array<{ resource: { attributes: OtlpSpan['attributes'] }; scopeSpans: Array<{ spans: OtlpSpan[] }> }>
        }
        for (const rs of body.resourceSpans) {
          const name = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue
          if (typeof name === 'string') services.add(name)
          for (const ss of rs.scopeSpans) spans.push(...ss.spans)
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  }).listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, services, server }
}

describe('tracing on (OTEL_EXPORTER_OTLP_ENDPOINT set)', () => {
  let upstream: UpstreamServer
  let receiver: Awaited<ReturnType<typeof startReceiver>>
  let sidecar: { url: string; child: ChildProcess }
  const traceId = randomBytes(16).toString('hex')
  const callerSpanId = randomBytes(8).toString('hex')
  const image = `/_next/image?url=${encodeURIComponent('/slow/2000/png/chelsea.png')}&w=640&q=75`
  let spansOf: (trace: string) => OtlpSpan[]
  let waiterTrace: string

  before(async () => {
    ;[upstream, receiver] = await Promise.all([startUpstream(), startReceiver()])
    sidecar = await startCli(['--frontend', upstream.url, '--cache', 'memory://'], {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '50',
    })
    spansOf = (trace) => receiver.spans.filter((s) => s.traceId === trace)
    const first = fetch(`${sidecar.url}${image}`, { headers: { accept: 'image/webp', traceparent: `00-${traceId}-${callerSpanId}-01`, 'x-request-id': 'trace-test-1' } })
    // The identical request goes out once the first one's upstream fetch is under way.
    await waitUntil(() => upstream.requests.some((r) => r.url.startsWith('/slow/2000/')), 'the first request to reach the upstream')
    const second = await fetch(`${sidecar.url}${image}`, { headers: { accept: 'image/webp', 'x-request-id': 'trace-test-2' } })
    assert.equal(second.status, 200)
    assert.equal((await first).status, 200)
    await waitUntil(() => spansOf(traceId).length >= 5 && receiver.spans.some((s) => s.name === 'lock wait'), 'the spans of both requests', 20_000)
    waiterTrace = receiver.spans.find((s) => s.name === 'lock wait')!.traceId
    // Its request span ends after the lock wait, and may come in a later export batch.
    await waitUntil(() => spansOf(waiterTrace).some((s) => s.kind === SERVER), 'the waiting request\'s own span', 20_000)
  })

  after(async () => {
    sidecar?.child.kill('SIGKILL')
    await upstream?.close()
    receiver?.server.close()
  })

  test('the request span is a SERVER span, child of the caller’s traceparent, with the request id and outcome', () => {
    const root = spansOf(traceId).find((s) => s.kind === SERVER)!
    assert.equal(root.name, 'GET /_next/image')
    assert.equal(root.parentSpanId, callerSpanId)
    assert.equal(attr(root, 'next_image_sidecar.request_id'), 'trace-test-1')
    assert.equal(attr(root, 'http.response.status_code'), 200)
    assert.equal(attr(root, 'next_image_sidecar.cache'), 'MISS')
  })

  test('cache lookup, upstream fetch, transform and store are children of the request span', () => {
    const spans = spansOf(traceId)
    const root = spans.find((s) => s.kind === SERVER)!
    const children = spans.filter((s) => s.parentSpanId === root.spanId).map((s) => s.name)
    assert.deepEqual(children.sort(), ['cache lookup', 'store', 'transform', 'upstream fetch'])
  })

  test('the upstream fetch is a CLIENT span with the upstream’s status, and the trace reaches the upstream', () => {
    const fetchSpan = spansOf(traceId).find((s) => s.name === 'upstream fetch')!
    assert.equal(fetchSpan.kind, CLIENT)
    assert.equal(attr(fetchSpan, 'http.response.status_code'), 200)
    assert.equal(attr(fetchSpan, 'next_image_sidecar.upstream'), 'internal')
    const sent = upstream.requests.find((r) => r.url.startsWith('/slow/2000/'))!
    assert.match(String(sent.headers.traceparent), new RegExp(`^00-${traceId}-${fetchSpan.spanId}-01$`))
  })

  test('the transform span names the format, the dimensions and the bytes', () => {
    const transform = spansOf(traceId).find((s) => s.name === 'transform')!
    assert.equal(attr(transform, 'image.format'), 'image/webp')
    assert.equal(attr(transform, 'image.width'), 640)
    assert.ok(Number(attr(transform, 'image.source_width')) > 0 && Number(attr(transform, 'image.source_height')) > 0)
    assert.ok(Number(attr(transform, 'image.bytes')) > 0 && Number(attr(transform, 'image.source_bytes')) > 0)
  })

  test('the identical request waits in a lock-wait span of its own trace, without fetching', () => {
    assert.notEqual(waiterTrace, traceId)
    const spans = spansOf(waiterTrace)
    const root = spans.find((s) => s.kind === SERVER)!
    assert.equal(attr(root, 'next_image_sidecar.request_id'), 'trace-test-2')
    assert.ok(spans.some((s) => s.name === 'lock wait' && s.parentSpanId === root.spanId))
    assert.ok(!spans.some((s) => s.name === 'upstream fetch'))
  })

  test('a placeholder request is a SERVER span of its route, with the lookup, fetch, placeholder and store as children', async () => {
    const trace = randomBytes(16).toString('hex')
    const res = await fetch(`${sidecar.url}/_sidecar/placeholder?url=${encodeURIComponent('/corpus/png/coffee.png')}`, { headers: { traceparent: `00-${trace}-${randomBytes(8).toString('hex')}-01` } })
    assert.equal(res.status, 200)
    await waitUntil(() => spansOf(trace).length >= 5, 'the placeholder request\'s spans', 20_000)
    const spans = spansOf(trace)
    const root = spans.find((s) => s.kind === SERVER)!
    assert.equal(root.name, 'GET /_sidecar/placeholder')
    assert.equal(attr(root, 'next_image_sidecar.cache'), 'MISS')
    assert.deepEqual(spans.filter((s) => s.parentSpanId === root.spanId).map((s) => s.name).sort(), ['cache lookup', 'placeholder', 'store', 'upstream fetch'])
    const made = spans.find((s) => s.name === 'placeholder')!
    assert.deepEqual([attr(made, 'image.source_width'), attr(made, 'image.source_height'), attr(made, 'image.blur')], [600, 400, true])
  })

  test('spans carry the service name', () => {
    assert.deepEqual([...receiver.services], ['next-image-sidecar'])
  })
})

describe('tracing off (no OTEL environment)', () => {
  test('no trace headers are sent upstream and the caller’s traceparent is not forwarded', async () => {
    const upstream = await startUpstream()
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '', OTEL_TRACES_EXPORTER: '' }
    const sidecar = await startCli(['--frontend', upstream.url, '--cache', 'memory://'], env)
    try {
      const traceparent = `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`
      const res = await fetch(`${sidecar.url}/_next/image?url=%2Fcorpus%2Fpng%2Fchelsea.png&w=640&q=75`, { headers: { traceparent } })
      assert.equal(res.status, 200)
      const sent = upstream.requests.find((r) => r.url === '/corpus/png/chelsea.png')!
      assert.equal(sent.headers.traceparent, undefined)
    } finally {
      sidecar.child.kill('SIGKILL')
      await upstream.close()
    }
  })
})
