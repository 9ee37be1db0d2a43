import express, { type ErrorRequestHandler, type RequestHandler } from 'express'
import ipaddr from 'ipaddr.js'
import type { Logger } from 'pino'
import type { CacheStore } from '../cache/types.js'
import type { Metrics } from '../runtime/metrics.js'
import { renderError } from './render-error.js'

export interface OpsRoutes {
  healthz: RequestHandler
  readyz: RequestHandler
  metricsRoute: RequestHandler
}

/** `/healthz` (alive), `/readyz` (can serve) and `/metrics`, for the image app and the ops port alike. */
export function opsRoutes({ store, log, metrics, metricsText, draining }: { store: CacheStore; log: Logger; metrics: Metrics; metricsText: () => Promise<string>; draining: () => boolean }): OpsRoutes {
  const healthz: RequestHandler = (_req, res) => {
    res.status(200).type('text/plain').end('ok')
  }
  const metricsRoute: RequestHandler = async (_req, res) => {
    try {
      const text = await metricsText()
      res.status(200).type(metrics.registry.contentType).end(text)
    } catch (err) {
      log.warn({ err }, 'metrics unavailable')
      res.status(503).type('text/plain').end('metrics unavailable')
    }
  }
  // Readiness means "can serve": every request is served around a failing store, so a store outage
  // must not take every replica out of the load balancer at once. The answer never waits on the
  // store; a probe only starts a background ping (one at a time) that keeps cache_store_up and the
  // store's failed/recovered log lines current while no traffic touches the store.
  let storeCheck: Promise<void> | undefined
  const readyz: RequestHandler = (_req, res) => {
    if (draining()) {
      res.status(503).type('text/plain').end('shutting down')
      return
    }
    storeCheck ??= store
      .ping()
      .catch(() => undefined)
      .finally(() => (storeCheck = undefined))
    res.status(200).type('text/plain').end(store.available === false ? 'ready (cache store failing: serving without it)' : 'ready')
  }
  return { healthz, readyz, metricsRoute }
}

/** Whether a peer address is this machine's loopback (127.0.0.0/8, ::1, and both as IPv4-mapped IPv6). */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address || !ipaddr.isValid(address)) return false
  return ipaddr.process(address).range() === 'loopback'
}

/**
 * Lets a route answer only a client on this machine; anyone else gets the 404 of a route that does not
 * exist. The image port is often public: without a metrics port its /metrics (load, limits, store health)
 * is for a local scraper or an operator's curl, not the internet. The socket's address only: a forwarded
 * header is whatever the client wrote.
 */
export const loopbackOnly: RequestHandler = (req, _res, next) => (isLoopbackAddress(req.socket.remoteAddress) ? next() : next('route'))

/**
 * The operations endpoints alone, for a port that is not exposed with the images. Routed and
 * rendered as the image port is: exact, case-sensitive paths (`/METRICS` and `/purge/` are 404) and
 * errors as plain text through renderError (Express's own page shows stack traces and file paths).
 */
export function createOpsApp({ healthz, readyz, metricsRoute, purge, log }: OpsRoutes & { purge?: Array<RequestHandler | ErrorRequestHandler>; log: Logger }): express.Express {
  const opsApp = express()
  opsApp.disable('x-powered-by')
  opsApp.disable('etag')
  opsApp.set('query parser', false)
  opsApp.set('strict routing', true)
  opsApp.set('case sensitive routing', true)
  if (purge) opsApp.post('/purge', ...purge)
  opsApp.get('/metrics', metricsRoute)
  opsApp.get('/healthz', healthz)
  opsApp.get('/readyz', readyz)
  opsApp.use((_req, res) => {
    res.status(404).type('text/plain').end('Not Found')
  })
  opsApp.use(renderError(log))
  return opsApp
}
