import compression from 'compression'
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express'
import helmet from 'helmet'
import sharp from 'sharp'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { createServer, type Server } from 'node:http'
import { pino, type Logger } from 'pino'
import { ResponseCache } from './cache/response-cache.js'
import { openStore, type OpenedStore } from './cache/open-store.js'
import type { CacheStore } from './cache/types.js'
import { clusterMetrics, IpcCoordinator } from './cluster.js'
import { createMetrics, type Metrics } from './metrics.js'
import { startRequestSpan } from './tracing.js'
import { WorkQueue } from './queue.js'
import { ConfigError, ImageError } from './errors.js'
import { createImageHandler } from './handler.js'
import { resolveSidecarConfig, type ResolvedNextConfig } from './images-config.js'
import { checkNumericOptions, DEFAULTS, type SidecarOptions } from './options.js'
import { defaultConcurrency, planMemory, readContainerLimits, type ContainerLimits, type MemoryPlan } from './limits.js'
import { configureSharp } from './transform.js'

export interface Sidecar {
  /** The Express app; mount it or serve it as it is. */
  app: express.Express
  config: ResolvedNextConfig
  store: CacheStore
  metrics: Metrics
  /** What the sidecar derived from the container (or host) limits and the options. */
  limits: DerivedLimits
  /** Starts an HTTP server; resolves once it listens. */
  listen(port?: number, host?: string): Promise<Server & { url: string }>
  /**
   * The operations endpoints alone (`/metrics`, `/healthz`, `/readyz`) on their own server, for a
   * port that is not exposed with the images (see `metricsOnMainPort`).
   */
  listenOps(port: number, host?: string): Promise<Server & { url: string }>
  /** Resolves when the background revalidations started so far have finished. */
  idle(): Promise<void>
  /** Marks the sidecar as draining: /readyz answers 503 and responses close their connection. */
  drain(): void
  /** Waits for background revalidations and closes the store. */
  close(): Promise<void>
}

export interface DerivedLimits extends MemoryPlan {
  container: ContainerLimits
  concurrency: number
  libvipsThreads: number
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new ConfigError(`${name}: expected an integer >= 1, received ${value}`)
  return value
}

/**
 * Builds the sidecar: validates options and the next.config once, opens the cache store and
 * returns the Express app. The app serves `GET|HEAD {basePath}/_next/image`, `/healthz`, `/readyz`.
 */
export function createSidecar(options: SidecarOptions): Sidecar {
  let frontend: URL
  try {
    frontend = new URL(options.frontend)
  } catch {
    throw new ConfigError(`frontend: expected an absolute http(s) URL, received "${String(options.frontend)}"`)
  }
  if (frontend.protocol !== 'http:' && frontend.protocol !== 'https:') {
    throw new ConfigError(`frontend: expected an http or https URL, received "${frontend.href}"`)
  }
  checkNumericOptions(options)
  const config = resolveSidecarConfig(options)
  const log: Logger = options.logger ?? pino({ level: process.env.LOG_LEVEL ?? 'info' })
  const metrics = createMetrics()
  for (const op of ['read', 'write'] as const) metrics.storeUp.set({ op }, 1)
  const share = options.clusterShare
  const workers = share?.count ?? 1
  const container = readContainerLimits()
  const whole = planMemory(container, {
    memoryLimitBytes: options.memoryLimit === undefined ? undefined : positiveInt('memoryLimit', options.memoryLimit),
    hotCacheBytes: options.hotCacheSize,
  })
  // Each worker of a cluster is a whole process with its own runtime and hot tier: it plans as a
  // container of its share of the memory, so the workers together fit the limit (reported whole).
  const memoryPlan: MemoryPlan =
    workers === 1 ? whole : { ...planMemory(container, { memoryLimitBytes: Math.floor(whole.limitBytes / workers), hotCacheBytes: options.hotCacheSize }), limitBytes: whole.limitBytes }
  const concurrency = positiveInt('concurrency', options.concurrency ?? defaultConcurrency(container.cpus, workers))
  // libvips' threads per transform: half of this process's share of the CPUs (Next's own default is
  // all cores); Next's imgOptConcurrency, when set, wins. Recorded as sharp really runs.
  configureSharp(config.sharp, Math.max(Math.floor(container.cpus / workers / 2), 1))
  const limits: DerivedLimits = {
    container,
    ...memoryPlan,
    concurrency,
    libvipsThreads: sharp.concurrency(),
  }
  metrics.limitCpus.set(container.cpus)
  metrics.limitMemory.set(limits.limitBytes)
  metrics.memoryBudget.set(limits.budgetBytes)
  metrics.concurrency.set(concurrency)
  metrics.libvipsThreads.set(limits.libvipsThreads)
  const opened: OpenedStore =
    typeof options.cache === 'object'
      ? { store: options.cache }
      : openStore(options.cache ?? DEFAULTS.cache, log, {
          maxSize: options.cacheMaxSize,
          maxEntrySize: options.cacheMaxEntrySize,
          prefix: options.cachePrefix,
          hotSize: memoryPlan.hotCacheBytes,
          share: options.clusterShare,
          onHealth: (op, up) => metrics.storeUp.set({ op }, up ? 1 : 0),
        })
  const { store } = opened
  // Redis coordinates every process that shares it; otherwise a cluster's workers coordinate
  // through their primary.
  const coordinator = opened.coordinator ?? (share ? new IpcCoordinator() : undefined)
  const metricsText = share ? clusterMetrics(metrics.registry) : () => metrics.registry.metrics()
  const timeoutMs = positiveInt('timeoutMs', options.timeoutMs ?? DEFAULTS.timeoutMs)
  const cache = new ResponseCache(store, {
    minimumCacheTTL: config.images.minimumCacheTTL,
    jobTimeoutMs: timeoutMs,
    log,
    coordinator,
    onResult: (result) => metrics.cacheRequests.inc({ result: result.toLowerCase() }),
  })
  const queueSize = positiveInt('queueSize', options.queueSize ?? concurrency * DEFAULTS.queuePerSlot)
  metrics.queueCapacity.set(queueSize)
  const queue = new WorkQueue(concurrency, queueSize, metrics, limits)
  if (config.images.domains.length > 0) log.warn('images.domains is deprecated; use images.remotePatterns')
  if (config.images.unoptimized) log.warn('images.unoptimized is true: every image request answers 404, as in Next')

  const handleImage = createImageHandler({
    config,
    frontend,
    cache,
    log,
    maxAttempts: positiveInt('maxAttempts', options.maxAttempts ?? DEFAULTS.maxAttempts),
    queue,
    metrics,
    upstreamTimeoutMs: positiveInt('upstreamTimeoutMs', options.upstreamTimeoutMs ?? DEFAULTS.upstreamTimeoutMs),
    resolve: options.resolve,
    // As `next start` (compress: true); the handler applies it to compressible types only.
    compress: compression(),
    signingKey: options.signingKey || undefined,
  })

  const headersTimeoutMs = positiveInt('headersTimeoutMs', options.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs)
  const serverTimeouts = {
    headersTimeoutMs,
    keepAliveTimeoutMs: positiveInt('keepAliveTimeoutMs', options.keepAliveTimeoutMs ?? DEFAULTS.keepAliveTimeoutMs),
    // Image requests have no body: receiving one whole request takes as long as its headers may.
    requestTimeoutMs: headersTimeoutMs,
  }

  let draining = false
  const app = express()
  app.disable('etag')
  app.disable('x-powered-by')
  app.set('query parser', false)
  app.set('strict routing', true)
  // Next's routes are case-sensitive: /_NEXT/IMAGE is a 404 there.
  app.set('case sensitive routing', true)
  app.use(
    helmet({
      // Image responses carry Next's own CSP (images.contentSecurityPolicy); helmet's would replace it.
      contentSecurityPolicy: false,
      // Images are embedded by pages on the frontend's origin: same-origin CORP would block them.
      crossOriginResourcePolicy: { policy: 'cross-origin' },
      // HSTS is the domain owner's call (in gateway mode it would cover the whole site).
      strictTransportSecurity: false,
    }),
  )

  const imagePath = `${config.basePath}/_next/image`
  // One log line per request, with a request id (the caller's X-Request-Id when it is sane).
  app.use((req, res, next) => {
    const started = process.hrtime.bigint()
    const given = req.headers['x-request-id']
    const id = typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID()
    res.setHeader('X-Request-Id', id)
    // Image requests only: probes and scrapes would drown the traces.
    const span = req.path === imagePath ? startRequestSpan(req.method, imagePath, req.headers, { 'next_image_sidecar.request_id': id }) : undefined
    if (draining) res.setHeader('Connection', 'close')
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
  })
  // The image route first: it is nearly all the traffic, and the router tries routes in order.
  // Next serves any method on this route; GET and HEAD (Express derives HEAD from GET) and POST.
  app.get(imagePath, handleImage)
  app.post(imagePath, handleImage)
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
    if (draining) {
      res.status(503).type('text/plain').end('shutting down')
      return
    }
    storeCheck ??= store
      .ping()
      .catch(() => undefined)
      .finally(() => (storeCheck = undefined))
    res.status(200).type('text/plain').end(store.available === false ? 'ready (cache store failing: serving without it)' : 'ready')
  }
  app.get('/healthz', healthz)
  // With a metrics port, the image origin (often public) does not publish the metrics.
  if (options.metricsOnMainPort !== false) app.get('/metrics', metricsRoute)
  app.get('/readyz', readyz)
  const opsApp = express()
  opsApp.disable('x-powered-by')
  opsApp.get('/metrics', metricsRoute)
  opsApp.get('/healthz', healthz)
  opsApp.get('/readyz', readyz)
  opsApp.use((_req, res) => {
    res.status(404).type('text/plain').end('Not Found')
  })
  if (config.trailingSlash) {
    // With trailingSlash, Next's loader emits /_next/image/?… and next start serves it directly.
    app.get(`${imagePath}/`, handleImage)
    app.post(`${imagePath}/`, handleImage)
  } else {
    // Next normalises the trailing slash before routing: /_next/image/?... → 308 /_next/image?...
    app.get(`${imagePath}/`, (req, res) => {
      const q = req.originalUrl.indexOf('?')
      res.redirect(308, imagePath + (q >= 0 ? req.originalUrl.slice(q) : ''))
    })
  }
  app.use((_req, res) => {
    res.status(404).type('text/plain').end('Not Found')
  })
  // The one place an error becomes a response: ImageError → its status and Next's message.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) {
      res.destroy()
      return
    }
    if (err instanceof ImageError) {
      if (err.statusCode >= 500) log.error({ err, url: req.originalUrl }, 'image request failed')
      else log.debug({ err, url: req.originalUrl }, 'image request rejected')
      for (const [name, value] of Object.entries(err.headers)) res.setHeader(name, value)
      // As Next: the bare message, chunked (no Content-Length, no Content-Type).
      res.status(err.statusCode).write(err.message)
      res.end()
      return
    }
    // Body-parser style client errors (e.g. malformed URLs) carry their own 4xx status.
    const status = (err as { status?: number } | undefined)?.status
    if (typeof status === 'number' && status >= 400 && status < 500) {
      res.status(status).end('Bad Request')
      return
    }
    log.error({ err, url: req.originalUrl }, 'unexpected error')
    res.status(500).end('Internal Server Error')
  })

  return {
    app,
    config,
    store,
    metrics,
    limits,
    listenOps: (port: number, host = '0.0.0.0') => listenOn(createServer({ keepAliveTimeout: serverTimeouts.keepAliveTimeoutMs }, opsApp), port, host),
    listen(port = 3001, host = '0.0.0.0') {
      const server = createServer(
        {
          // How often Node looks for requests past headersTimeout/requestTimeout (its default, 30 s,
          // would let a client trickling its headers hold a socket for 40 s instead of 10).
          connectionsCheckingInterval: 1000,
          headersTimeout: serverTimeouts.headersTimeoutMs,
          requestTimeout: serverTimeouts.requestTimeoutMs,
          keepAliveTimeout: serverTimeouts.keepAliveTimeoutMs,
        },
        app,
      )
      return listenOn(server, port, host)
    },
    idle: () => cache.settled(),
    drain: () => {
      draining = true
    },
    async close() {
      await cache.settled()
      await coordinator?.close()
      await store.close()
    },
  }
}

async function listenOn(server: Server, port: number, host: string): Promise<Server & { url: string }> {
  server.listen(port, host)
  await once(server, 'listening')
  const address = server.address() as AddressInfo
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return Object.assign(server, { url: `http://${shownHost}:${address.port}` })
}
