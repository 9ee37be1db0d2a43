import compressible from 'compressible'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { SyncLookup } from '../cache/memory-store.js'
import type { CacheEntry, CacheStore } from '../cache/types.js'
import { isNotModified } from '../next/headers.js'
import type { Metrics } from '../runtime/metrics.js'
import { startRequestSpan, traced } from '../runtime/tracing.js'
import type { ImageHandler } from './handler.js'
import { levelOf, requestIdOf } from './request-log.js'

export interface HitPathOptions {
  /** The paths the image route answers on (`{basePath}/_next/image`, and with a trailing slash when trailingSlash). */
  imagePaths: string[]
  /** The route name of the request span, as the full path names it (only this path gets one). */
  spanRoute: string
  store: CacheStore
  handler: ImageHandler
  /** What the security middleware sets on every response, in its order (see headersSetBy). */
  securityHeaders: Array<[string, string]>
  metrics: Metrics
  log: Logger
  draining: () => boolean
  /** An entry whose source is due for a check (--revalidate-after) goes the full way, which starts it. */
  dueForCheck?: (entry: CacheEntry) => boolean
}

/** A response ready to write but for its request id: flat [name, value, …] in the full path's order. */
interface Prepared {
  ok: string[]
  notModified: string[]
  /** Index of the X-Request-Id value in both arrays. */
  idAt: number
  bytes: number
  /** SVG, ICO, BMP: gzipped by the full path's compression middleware when the client accepts it. */
  compressible: boolean
}

/**
 * The headers a (static, request-independent) middleware sets, in its order, recorded by running
 * it once on a stand-in response: the hit path then writes exactly what helmet writes today.
 */
export function headersSetBy(middleware: (req: never, res: never, next: (err?: unknown) => void) => void): Array<[string, string]> {
  const headers: Array<[string, string]> = []
  const at = (name: string) => headers.findIndex(([n]) => n.toLowerCase() === name.toLowerCase())
  const res = {
    setHeader(name: string, value: unknown) {
      const i = at(name)
      // Node keeps a replaced header where it was first set, under the latest spelling.
      if (i >= 0) headers[i] = [name, String(value)]
      else headers.push([name, String(value)])
      return res
    },
    removeHeader(name: string) {
      const i = at(name)
      if (i >= 0) headers.splice(i, 1)
    },
    getHeader: (name: string) => headers[at(name)]?.[1],
  }
  let passed = false
  middleware({ headers: {}, method: 'GET', url: '/' } as never, res as never, (err) => {
    passed = err === undefined
  })
  if (!passed) throw new Error('the security middleware did not pass a stand-in request synchronously')
  return headers
}

/**
 * The hit path, ahead of Express: a GET of the image route whose variant is fresh in the hot tier
 * is answered here — the memoised plan (signature, validation, negotiation, key), a synchronous
 * hot-tier lookup (the stored entry itself, no decode or copy), the conditional check, then the
 * precomputed headers and the bytes in one write. The response is the full path's, byte for byte
 * (test/http/hit-path.test.ts); metrics, the request id, the span and the log line are the same.
 * Anything else returns false and goes to Express unchanged: misses, stale entries, errors, HEAD,
 * POST, compressible types (gzip), other routes, and every request while draining.
 * Undefined when the store has no synchronous hot tier (a custom store, `hotSize` 0).
 */
export function createHitPath(o: HitPathOptions): ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined {
  const lookup = o.store as Partial<SyncLookup>
  if (typeof lookup.peek !== 'function') return undefined
  const peek = lookup.peek.bind(o.store)
  const { handler, log, imagePaths } = o
  const security = o.securityHeaders.flat()
  const timed = { ok: o.metrics.requestDuration.labels({ status_class: '2xx' }), notModified: o.metrics.requestDuration.labels({ status_class: '3xx' }), aborted: o.metrics.requestDuration.labels({ status_class: 'aborted' }) }
  const hits = o.metrics.cacheRequests.labels({ result: 'hit' })
  const prepared = new WeakMap<CacheEntry, Prepared>()

  function prepare(entry: CacheEntry, plan: ReturnType<ImageHandler['planFor']>): Prepared {
    let p = prepared.get(entry)
    if (!p) {
      const head = [...security, 'X-Request-Id', '']
      p = {
        ok: [...head, ...handler.headersFor(entry, plan.params, 'HIT', false).flat()],
        notModified: [...head, ...handler.headersFor(entry, plan.params, 'HIT', true).flat()],
        idAt: security.length + 1,
        bytes: entry.buffer.byteLength,
        compressible: Boolean(compressible(entry.contentType)),
      }
      prepared.set(entry, p)
    }
    return p
  }

  /** The full path's 'close' handler (request-log.ts), from what this path wrote. */
  function observe(req: IncomingMessage, res: ServerResponse, id: string, started: bigint, status: 200 | 304, bytes: number, span: ReturnType<typeof startRequestSpan>): void {
    res.once('close', () => {
      const aborted = !res.writableFinished
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      ;(aborted ? timed.aborted : status === 200 ? timed.ok : timed.notModified).observe(seconds)
      const shown = aborted ? 499 : status
      const cache = status === 200 ? 'HIT' : undefined
      span?.finish(shown, { 'next_image_sidecar.cache': cache ?? '', ...(aborted ? { 'next_image_sidecar.aborted': true } : {}) })
      const level = levelOf(shown, cache)
      if (!log.isLevelEnabled(level)) return
      log[level]({ reqId: id, method: req.method, url: req.url, status: shown, ...(aborted ? { aborted: true } : {}), cache, bytes: status === 200 ? bytes : 0, ms: Math.round(seconds * 1e4) / 10 }, 'request')
    })
  }

  return function serveHit(req, res) {
    if (req.method !== 'GET') return false
    const url = req.url ?? ''
    const q = url.indexOf('?')
    const path = q >= 0 ? url.slice(0, q) : url
    if (!imagePaths.includes(path) || o.draining()) return false
    const started = process.hrtime.bigint()
    let plan: ReturnType<ImageHandler['planFor']>
    try {
      plan = handler.planFor(q >= 0 ? url.slice(q + 1) : '', req.headers.accept)
    } catch {
      // Invalid or unsigned: the full path renders the error.
      return false
    }
    const entry = peek(plan.key)
    // Stale entries go the full way, which serves them as STALE and starts the refresh.
    if (!entry || Date.now() > entry.expireAt || o.dueForCheck?.(entry)) return false
    const p = prepare(entry, plan)
    const notModified = isNotModified(req.headers, entry.etag)
    if (p.compressible && !notModified) return false

    hits.inc()
    const id = requestIdOf(req.headers)
    const span = path === o.spanRoute ? startRequestSpan('GET', o.spanRoute, req.headers, { 'next_image_sidecar.request_id': id }) : undefined
    // A sampled hit gets the child the full path's lookup makes (tracing off: never reached).
    if (span) void traced(span.context, 'cache lookup', { 'next_image_sidecar.store': o.store.name }, async (s) => void s?.setAttribute('next_image_sidecar.cache_hit', true))
    observe(req, res, id, started, notModified ? 304 : 200, p.bytes, span)
    const headers = (notModified ? p.notModified : p.ok).slice()
    headers[p.idAt] = id
    res.writeHead(notModified ? 304 : 200, headers)
    res.end(notModified ? undefined : entry.buffer)
    return true
  }
}
