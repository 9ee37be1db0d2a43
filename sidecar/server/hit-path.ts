import compressible from 'compressible'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { formOf } from '../cache/codec.js'
import type { SyncLookup } from '../cache/memory-store.js'
import type { CacheEntry, CacheStore } from '../cache/types.js'
import { isNotModified } from '../next/headers.js'
import type { Metrics } from '../runtime/metrics.js'
import { startRequestSpan, traced } from '../runtime/tracing.js'
import { STORE_READ, type ImageHandler, type Plan } from './handler.js'
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
  /**
   * The full path (the Express app), given with `readStore`: a request the store's answer does not
   * make a servable HIT is handed to it once the read is back.
   */
  fallback?: (req: IncomingMessage, res: ServerResponse) => void
  /**
   * The store answers over the network (Redis): a request the synchronous lookup cannot answer
   * reads the store here (one GET), and a fresh HIT is answered as a hot one is, ahead of Express.
   */
  readStore?: boolean
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
 * The hit path, ahead of Express: a GET of the image route whose variant is fresh in the cache is
 * answered here — the memoised plan (signature, validation, negotiation, key), a synchronous lookup
 * (the hot tier's stored entry itself, no decode or copy; below it, or without it, the SQLite row read
 * at once), or with `readStore` one read of a networked store (Redis), then the conditional check and
 * the headers precomputed per stored form (formOf) with the bytes in one write. The response is the full
 * path's, byte for byte (test/http/hit-path.test.ts); metrics, the request id, the span and the log line
 * are the same. Anything else goes to Express unchanged (returned false, or after the store read handed
 * to `fallback`): misses, stale entries, errors, HEAD, POST, compressible types (gzip), other routes, and
 * every request while draining. Undefined when the store can answer neither way (a custom store).
 */
export function createHitPath(o: HitPathOptions): ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined {
  const lookup = o.store as Partial<SyncLookup>
  const peek = typeof lookup.peek === 'function' ? lookup.peek.bind(o.store) : undefined
  // Below the hot tier the peek already asked (a request counts once in its admission), else the store itself.
  const below = (o.store as CacheStore & { getBelowHot?: CacheStore['get'] }).getBelowHot
  const read = o.readStore && o.fallback ? (below ?? o.store.get).bind(o.store) : undefined
  if (!peek && !read) return undefined
  const { handler, log, imagePaths } = o
  const security = o.securityHeaders.flat()
  const timed = { ok: o.metrics.requestDuration.labels({ status_class: '2xx' }), notModified: o.metrics.requestDuration.labels({ status_class: '3xx' }), aborted: o.metrics.requestDuration.labels({ status_class: 'aborted' }) }
  const hits = o.metrics.cacheRequests.labels({ result: 'hit' })
  // By stored form: every read of one SQLite row or Redis value shares it (formOf), a hot entry is its own.
  const prepared = new WeakMap<object, Prepared>()

  function prepare(entry: CacheEntry, plan: Plan): Prepared {
    const form = formOf(entry)
    let p = prepared.get(form)
    if (!p) {
      const head = [...security, 'X-Request-Id', '']
      p = {
        ok: [...head, ...handler.headersFor(entry, plan.params, 'HIT', false).flat()],
        notModified: [...head, ...handler.headersFor(entry, plan.params, 'HIT', true).flat()],
        idAt: security.length + 1,
        bytes: entry.buffer.byteLength,
        compressible: Boolean(compressible(entry.contentType)),
      }
      prepared.set(form, p)
    }
    return p
  }

  /** Time, log line and span of a request that ended (`status`), or whose client went first (499). */
  function finished(req: IncomingMessage, id: string, started: bigint, status: 200 | 304 | 499, bytes: number, span: ReturnType<typeof startRequestSpan>): void {
    const aborted = status === 499
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    ;(aborted ? timed.aborted : status === 200 ? timed.ok : timed.notModified).observe(seconds)
    const cache = status === 200 ? 'HIT' : undefined
    span?.finish(status, { 'next_image_sidecar.cache': cache ?? '', ...(aborted ? { 'next_image_sidecar.aborted': true } : {}) })
    const level = levelOf(status, cache)
    if (!log.isLevelEnabled(level)) return
    log[level]({ reqId: id, method: req.method, url: req.url, status, ...(aborted ? { aborted: true } : {}), cache, bytes: status === 200 ? bytes : 0, ms: Math.round(seconds * 1e4) / 10 }, 'request')
  }

  /** The full path's 'close' handler (request-log.ts), from what this path wrote. */
  function observe(req: IncomingMessage, res: ServerResponse, id: string, started: bigint, status: 200 | 304, bytes: number, span: ReturnType<typeof startRequestSpan>): void {
    res.once('close', () => finished(req, id, started, res.writableFinished ? status : 499, bytes, span))
  }

  /** Answers a fresh entry, as the full path would; false (nothing written) when it must go the full way. */
  function answer(req: IncomingMessage, res: ServerResponse, entry: CacheEntry | undefined, plan: Plan, path: string, started: bigint): boolean {
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

  /**
   * The store read ahead of Express (readStore): the request is this path's from here on. A HIT is
   * answered here; anything else (a miss, a stale entry, a failed read) is handed to the full path
   * once the read is back, which reads the store again as it always does. A client gone meanwhile
   * is recorded as the full path records it (499).
   */
  function readThenAnswer(req: IncomingMessage, res: ServerResponse, plan: Plan, path: string, started: bigint): void {
    let settled = false
    const gone = () => {
      if (settled) return
      settled = true
      finished(req, requestIdOf(req.headers), started, 499, 0, undefined)
    }
    res.once('close', gone)
    const then = (entry: CacheEntry | undefined, failed = false) => {
      if (settled || req.socket.destroyed) return // 'close' records it
      settled = true
      res.off('close', gone)
      if (o.draining() || !answer(req, res, entry, plan, path, started)) {
        // The full path uses this read instead of reading again. A store that failed answers a miss (ResilientStore),
        // handed on as one: the full path's own read would be skipped by the store's back-off all the same.
        if (!failed) (req as IncomingMessage & { [STORE_READ]?: { key: string; entry: CacheEntry | undefined } })[STORE_READ] = { key: plan.key, entry }
        o.fallback!(req, res)
      }
    }
    read!(plan.key).then((entry) => then(entry), () => then(undefined, true))
  }

  return function serveHit(req, res) {
    if (req.method !== 'GET') return false
    const url = req.url ?? ''
    const q = url.indexOf('?')
    const path = q >= 0 ? url.slice(0, q) : url
    if (!imagePaths.includes(path) || o.draining()) return false
    const started = process.hrtime.bigint()
    let plan: Plan
    try {
      plan = handler.planFor(q >= 0 ? url.slice(q + 1) : '', req.headers.accept)
    } catch {
      // Invalid or unsigned: the full path renders the error.
      return false
    }
    const entry = peek?.(plan.key)
    if (answer(req, res, entry, plan, path, started)) return true
    // Held but not servable here. Fresh (due for a check, gzip): the full way takes this read as its own (no
    // second read of the store, nor a second count in the hot tier's admission). Stale: the full way reads the
    // store, where another replica may have put a fresher one.
    if (entry) {
      if (Date.now() <= entry.expireAt) (req as IncomingMessage & { [STORE_READ]?: { key: string; entry: CacheEntry | undefined } })[STORE_READ] = { key: plan.key, entry }
      return false
    }
    if (!read) return false
    readThenAnswer(req, res, plan, path, started)
    return true
  }
}
