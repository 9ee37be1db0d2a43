import express, { type RequestHandler } from 'express'
import type { Logger } from 'pino'
import type { CacheStore } from '../cache/types.js'
import type { Metrics } from '../runtime/metrics.js'

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

/** The operations endpoints alone, for a port that is not exposed with the images. */
export function createOpsApp({ healthz, readyz, metricsRoute, purge }: OpsRoutes & { purge?: RequestHandler[] }): express.Express {
  const opsApp = express()
  opsApp.disable('x-powered-by')
  if (purge) opsApp.post('/purge', ...purge)
  opsApp.get('/metrics', metricsRoute)
  opsApp.get('/healthz', healthz)
  opsApp.get('/readyz', readyz)
  opsApp.use((_req, res) => {
    res.status(404).type('text/plain').end('Not Found')
  })
  return opsApp
}
