import { randomUUID } from 'node:crypto'
import type { RequestHandler } from 'express'
import type { Logger } from 'pino'
import type { Metrics } from '../runtime/metrics.js'
import { startRequestSpan } from '../runtime/tracing.js'

export interface ObserveOptions {
  log: Logger
  metrics: Metrics
  /** The image route: only its requests get a span (probes and scrapes would drown the traces). */
  imagePath: string
  /** While draining, responses close their connection. */
  draining: () => boolean
}

/**
 * Every request is counted and timed, and gets one log line and a request id (the caller's
 * X-Request-Id when it is sane); image requests get a SERVER span that their work hangs under.
 */
export function observeRequests({ log, metrics, imagePath, draining }: ObserveOptions): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint()
    const given = req.headers['x-request-id']
    const id = typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID()
    res.setHeader('X-Request-Id', id)
    // Image requests only: probes and scrapes would drown the traces.
    const span = req.path === imagePath ? startRequestSpan(req.method, imagePath, req.headers, { 'next_image_sidecar.request_id': id }) : undefined
    if (draining()) res.setHeader('Connection', 'close')
    // 'close' fires for every request, also when the client goes first ('finish' then never
    // does): those are the slow requests an operator looks for. They are recorded as 499.
    res.once('close', () => {
      const aborted = !res.writableFinished
      const status = aborted ? 499 : res.statusCode
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      metrics.requestDuration.observe({ status_class: aborted ? 'aborted' : `${Math.floor(status / 100)}xx` }, seconds)
      span?.finish(status, { 'next_image_sidecar.cache': String(res.getHeader('X-Nextjs-Cache') ?? ''), ...(aborted ? { 'next_image_sidecar.aborted': true } : {}) })
      if (!log.isLevelEnabled('info')) return
      log.info(
        {
          reqId: id,
          method: req.method,
          url: req.originalUrl,
          status,
          ...(aborted ? { aborted: true } : {}),
          cache: res.getHeader('X-Nextjs-Cache'),
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
