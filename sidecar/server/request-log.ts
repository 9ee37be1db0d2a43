import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import type { RequestHandler } from 'express'
import { stdSerializers, type Logger } from 'pino'
import { redactError, redactUrl } from '../runtime/credentials.js'
import type { Metrics } from '../runtime/metrics.js'
import { startRequestSpan } from '../runtime/tracing.js'

export interface ObserveOptions {
  log: Logger
  metrics: Metrics
  /** The image and placeholder routes: only their requests get a span (probes and scrapes would drown the traces). */
  tracedPaths: readonly string[]
  /** While draining, responses close their connection. */
  draining: () => boolean
}

const redactString = (value: unknown) => (typeof value === 'string' ? redactUrl(value) : value)

/**
 * The sidecar's logger: every line's `url`, `href`, `selector` and `err` (message, stack and causes)
 * with the values of credential-like query parameters hidden (`X-Amz-Signature=REDACTED`, see
 * runtime/credentials.ts). A presigned source URL is a bearer credential until it expires: it must
 * not reach log storage, which more people read than may fetch the images.
 */
export function redactingLogger(log: Logger): Logger {
  return log.child(
    {},
    {
      serializers: {
        err: (err: unknown) => stdSerializers.err(redactError(err) as Error),
        url: redactString,
        href: redactString,
        selector: (selector: unknown) => (selector && typeof selector === 'object' ? Object.fromEntries(Object.entries(selector).map(([k, v]) => [k, Array.isArray(v) ? v.map(redactString) : redactString(v)])) : selector),
      },
    },
  )
}

const SANE_ID = /^[\w.:-]{1,128}$/

/** The caller's X-Request-Id when it is sane, else a fresh UUID. */
export function requestIdOf(headers: IncomingHttpHeaders): string {
  const given = headers['x-request-id']
  return typeof given === 'string' && SANE_ID.test(given) ? given : randomUUID()
}

/**
 * The level of a request's log line. A HIT and a 304 are debug (opt in with LOG_LEVEL=debug): they
 * are most of the traffic, and a line each cost about as much CPU as the hit itself
 * (bench/results/hits.md). Misses, stale answers, errors and aborted requests are always logged;
 * /metrics counts and times every request.
 */
export function levelOf(status: number, cache: unknown): 'info' | 'debug' {
  return status === 304 || (cache === 'HIT' && status < 400) ? 'debug' : 'info'
}

/**
 * Every request is counted and timed, and gets a log line (see levelOf) and a request id (the caller's
 * X-Request-Id when it is sane); image requests get a SERVER span that their work hangs under.
 */
export function observeRequests({ log, metrics, tracedPaths, draining }: ObserveOptions): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint()
    const id = requestIdOf(req.headers)
    res.setHeader('X-Request-Id', id)
    // Image requests only: probes and scrapes would drown the traces.
    const span = tracedPaths.includes(req.path) ? startRequestSpan(req.method, req.path, req.headers, { 'next_image_sidecar.request_id': id }) : undefined
    if (draining()) res.setHeader('Connection', 'close')
    // 'close' fires for every request, also when the client goes first ('finish' then never
    // does): those are the slow requests an operator looks for. They are recorded as 499.
    res.once('close', () => {
      const aborted = !res.writableFinished
      const status = aborted ? 499 : res.statusCode
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      metrics.requestDuration.observe({ status_class: aborted ? 'aborted' : `${Math.floor(status / 100)}xx` }, seconds)
      // The optimizer's outcome header, or the placeholder endpoint's.
      const cache = res.getHeader('X-Nextjs-Cache') ?? res.getHeader('X-Sidecar-Cache')
      span?.finish(status, { 'next_image_sidecar.cache': String(cache ?? ''), ...(aborted ? { 'next_image_sidecar.aborted': true } : {}) })
      const level = levelOf(status, cache)
      if (!log.isLevelEnabled(level)) return
      log[level](
        {
          reqId: id,
          method: req.method,
          url: req.originalUrl,
          status,
          ...(aborted ? { aborted: true } : {}),
          cache,
          bytes: Number(res.getHeader('Content-Length') ?? 0),
          ms: Math.round(seconds * 1e4) / 10,
        },
        'request',
      )
    })
    // The image handler hangs its work's spans under this one.
    res.locals.trace = span?.context
    next()
  }
}
