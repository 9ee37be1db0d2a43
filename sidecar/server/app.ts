import compression from 'compression'
import express from 'express'
import helmet from 'helmet'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { pino, type Logger } from 'pino'
import { ResponseCache } from '../cache/response-cache.js'
import { openStore, type OpenedStore } from '../cache/open-store.js'
import { PLACEHOLDER_PATH, PLACEHOLDER_TYPE, type CacheStore } from '../cache/types.js'
import { clusterMetrics, IpcCoordinator, IpcPurgeBroadcast, workerListenOptions } from '../runtime/cluster.js'
import { createMetrics, type Metrics } from '../runtime/metrics.js'
import { WorkQueue } from '../runtime/queue.js'
import { ConfigError } from '../errors.js'
import { createImageHandler } from './handler.js'
import { createPlaceholderHandler } from './placeholder-handler.js'
import { createSourceFetch } from './source-fetch.js'
import { createHitPath, headersSetBy } from './hit-path.js'
import { createOpsApp, loopbackOnly, opsRoutes } from './ops.js'
import { checkAdminToken, createPurger, purgeRoute } from './purge.js'
import type { PurgeRequest, PurgeResult } from '../cache/purge-request.js'
import { candidateKeys, credentialParams, ignoredParams } from '../cache/key.js'
import type { PurgeBroadcast } from '../runtime/coordinator.js'
import { renderError } from './render-error.js'
import { observeRequests, redactingLogger } from './request-log.js'
import { resolveSidecarConfig, type ResolvedNextConfig } from '../next/images-config.js'
import { checkNumericOptions, DEFAULTS, type SidecarOptions } from './options.js'
import { deriveLimits, positiveInt, type DerivedLimits } from './limits.js'

export interface Sidecar {
  /** The Express app; mount it or serve it as it is. */
  app: express.Express
  /**
   * Answers a GET whose variant is fresh in the cache, ahead of Express (the same response, byte
   * for byte, at a fraction of the CPU); false when the request must go to `app`. With Redis it may
   * read the store first and take the request (true), handing it to `app` itself when that read
   * does not make a HIT. See hit-path.ts.
   */
  serveHit(req: IncomingMessage, res: ServerResponse): boolean
  /** `serveHit`, else `app`: what `listen` serves; use it to serve the sidecar from a server of your own. */
  requestListener(req: IncomingMessage, res: ServerResponse): void
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
  /**
   * Removes every cached variant (all widths, qualities, formats) of some sources, of a prefix or of
   * all, from the store, this process's hot tier and every other worker's and replica's; jobs of those
   * sources in flight produce again. Resolves with what was removed and the optimizer URLs to purge
   * from a CDN in front.
   */
  purge(request: PurgeRequest): Promise<PurgeResult>
  /** Resolves when the background revalidations started so far have finished. */
  idle(): Promise<void>
  /** Marks the sidecar as draining: /readyz answers 503 and responses close their connection. */
  drain(): void
  /** Waits for background revalidations and closes the store. */
  close(): Promise<void>
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
  const credentials = credentialParams(options.cacheKeyIgnoreParams)
  if (credentials.length > 0 && !options.dangerouslyIgnoreCredentialParams) {
    const named = credentials.map((c) => (c.covers === c.pattern ? c.pattern : `${c.pattern} (${c.covers})`)).join(', ')
    throw new ConfigError(
      `--cache-key-ignore-params: ${named} would leave credentials out of the cache key, so an image cached for one signed URL would be served to the same path with any signature or none. ` +
        'Name only cache-busting parameters (t, v), or add --dangerously-ignore-credential-params if these sources are public anyway',
    )
  }
  if (options.adminToken) checkAdminToken(options.adminToken)
  const config = resolveSidecarConfig(options)
  // Source URLs reach log lines (access log, errors, purges): credential-like parameters are redacted there.
  const log: Logger = redactingLogger(options.logger ?? pino({ level: process.env.LOG_LEVEL ?? 'info' }))
  const metrics = createMetrics()
  for (const op of ['read', 'write'] as const) metrics.storeUp.set({ op }, 1)
  const share = options.clusterShare
  const limits = deriveLimits(options, config)
  const { container, concurrency } = limits
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
          maximumDiskCacheSize: config.images.maximumDiskCacheSize,
          maxEntrySize: options.cacheMaxEntrySize,
          prefix: options.cachePrefix,
          hotSize: limits.hotCacheBytes,
          share: options.clusterShare,
          maintenance: options.cacheMaintenance,
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
    revalidateAfterMs: options.revalidateAfter !== undefined ? options.revalidateAfter * 1000 : undefined,
    onCheck: (outcome) => metrics.sourceChecks.inc({ outcome }),
    onResult: (result, variant) => (variant?.mimeType === PLACEHOLDER_TYPE ? metrics.placeholderRequests : metrics.cacheRequests).inc({ result: result.toLowerCase() }),
  })
  // Purges reach the other processes' hot tiers: through Redis when shared there, else a cluster's primary.
  const purgeBroadcast: PurgeBroadcast | undefined =
    opened.coordinator && 'announcePurge' in opened.coordinator ? (opened.coordinator as unknown as PurgeBroadcast) : share ? new IpcPurgeBroadcast() : undefined
  const purger = createPurger({ cache, broadcasts: purgeBroadcast ? [purgeBroadcast] : [], basePath: config.basePath, log, feed: opened.purgeFeed, ignore: ignoredParams(options.cacheKeyIgnoreParams), candidates: (sources) => candidateKeys(sources, { widths: [...config.images.imageSizes, ...config.images.deviceSizes], qualities: config.images.qualities }, config.profile.major, ignoredParams(options.cacheKeyIgnoreParams)) })
  const queueSize = positiveInt('queueSize', options.queueSize ?? concurrency * DEFAULTS.queuePerSlot)
  metrics.queueCapacity.set(queueSize)
  const queue = new WorkQueue(concurrency, queueSize, metrics, limits)
  if (config.images.domains.length > 0) log.warn('images.domains is deprecated; use images.remotePatterns')
  if (config.images.unoptimized) log.warn('images.unoptimized is true: every image request answers 404, as in Next')

  const maxAttempts = positiveInt('maxAttempts', options.maxAttempts ?? DEFAULTS.maxAttempts)
  const upstreamTimeoutMs = positiveInt('upstreamTimeoutMs', options.upstreamTimeoutMs ?? DEFAULTS.upstreamTimeoutMs)
  const signingKey = options.signingKey || undefined
  if (credentials.length > 0) log.warn({ params: credentials.map((c) => c.pattern) }, '--dangerously-ignore-credential-params: cached images are served without the origin checking the credentials of each URL')
  const ignoreParams = ignoredParams(options.cacheKeyIgnoreParams)
  const fetchSource = createSourceFetch({ config, frontend, metrics, upstreamTimeoutMs, resolve: options.resolve })
  const handleImage = createImageHandler({
    config,
    cache,
    fetchSource,
    log,
    maxAttempts,
    queue,
    metrics,
    // As `next start` (compress: true); the handler applies it to compressible types only.
    compress: compression(),
    signingKey,
    ignoreParams,
  })
  const handlePlaceholder = createPlaceholderHandler({
    config,
    cache,
    fetchSource,
    queue,
    metrics,
    log,
    maxAttempts,
    signingKey,
    ignoreParams,
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
  const security = helmet({
    // Image responses carry Next's own CSP (images.contentSecurityPolicy); helmet's would replace it.
    contentSecurityPolicy: false,
    // Images are embedded by pages on the frontend's origin: same-origin CORP would block them.
    crossOriginResourcePolicy: { policy: 'cross-origin' },
    // HSTS is the domain owner's call (in gateway mode it would cover the whole site).
    strictTransportSecurity: false,
  })
  app.use(security)

  const imagePath = `${config.basePath}/_next/image`
  app.use(observeRequests({ log, metrics, tracedPaths: [imagePath, PLACEHOLDER_PATH], draining: () => draining }))
  // The image route first: it is nearly all the traffic, and the router tries routes in order.
  // Next serves any method on this route; GET and HEAD (Express derives HEAD from GET) and POST.
  app.get(imagePath, handleImage)
  app.post(imagePath, handleImage)
  // Beyond Next: a source's size and blur placeholder, for the frontend's server (GET and HEAD).
  app.get(PLACEHOLDER_PATH, handlePlaceholder)
  const { healthz, readyz, metricsRoute } = opsRoutes({ store, log, metrics, metricsText, draining: () => draining })
  app.get('/healthz', healthz)
  // With a metrics port, the image origin (often public) does not publish the metrics; without one, it
  // answers them to clients on this machine only.
  if (options.metricsOnMainPort !== false) app.get('/metrics', loopbackOnly, metricsRoute)
  app.get('/readyz', readyz)
  // No token, no route: the admin surface does not exist unless asked for.
  const purgeHandlers = options.adminToken ? purgeRoute({ purger, token: options.adminToken, log, registry: metrics.registry }) : undefined
  if (purgeHandlers && options.metricsOnMainPort !== false) app.post('/purge', ...purgeHandlers)
  const opsApp = createOpsApp({ healthz, readyz, metricsRoute, purge: purgeHandlers, log })
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
  app.use(renderError(log))

  // Fresh HITs are answered ahead of Express, with the same bytes; the rest goes to `app`.
  const hitPath = config.images.unoptimized || config.images.loader !== 'default'
    ? undefined
    : createHitPath({ imagePaths: config.trailingSlash ? [imagePath, `${imagePath}/`] : [imagePath], spanRoute: imagePath, store, handler: handleImage, securityHeaders: headersSetBy(security), metrics, log, draining: () => draining, dueForCheck: (entry) => cache.dueForCheck(entry), readStore: opened.remote, fallback: app })
  const serveHit = hitPath ?? (() => false)
  const requestListener = (req: IncomingMessage, res: ServerResponse) => {
    if (!serveHit(req, res)) app(req, res)
  }

  return {
    app,
    serveHit,
    requestListener,
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
        requestListener,
      )
      return listenOn(server, port, host)
    },
    purge: (request) => purger.purge(request),
    idle: () => cache.settled(),
    drain: () => {
      draining = true
    },
    async close() {
      await purger.close()
      await cache.settled()
      await coordinator?.close()
      await store.close()
    },
  }
}

async function listenOn(server: Server, port: number, host: string): Promise<Server & { url: string }> {
  // A --workers worker binds the port itself where it can, so the primary relays no connections.
  server.listen({ port, host, ...workerListenOptions(port) })
  await once(server, 'listening')
  const address = server.address() as AddressInfo
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return Object.assign(server, { url: `http://${shownHost}:${address.port}` })
}
