/** `next-image-sidecar [options]`: serves images, alone or as a cluster of workers. */
import cluster from 'node:cluster'
import { pino } from 'pino'
import { reportListening, runPrimary, workerShare } from '../runtime/cluster.js'
import { redactUrl } from '../cache/redis-url.js'
import { ConfigError } from '../errors.js'
import { negotiableFormats, resolveSidecarConfig } from '../next/images-config.js'
import { invalidOption, RANGES } from '../server/options.js'
import { allocator } from '../runtime/limits.js'
import { startTracing } from '../runtime/tracing.js'
import { HELP, logLevel, parseFlags, undetectedNextVersion, sidecarOptions, valueOf } from './flags.js'

// The service itself (Express, sharp, SQLite, Redis clients) is imported only where it runs, so a
// `--workers` primary, which serves nothing, stays small.
const loadApp = () => import('../server/app.js')

/** Everything `serve` reads from its flags and the environment, checked; `help` when asked for --help. */
export async function serveSettings(argv: string[], env: NodeJS.ProcessEnv = process.env) {
  const { values } = parseFlags('serve', argv)
  if (values.help) return { help: true as const }
  const port = valueOf('port', values, env)!
  const host = valueOf('host', values, env)!
  const workers = valueOf('workers', values, env)!
  const metricsPort = valueOf('metricsPort', values, env)
  const metricsHost = valueOf('metricsHost', values, env) ?? host
  if (metricsPort !== undefined && metricsPort === port) throw new ConfigError(`--metrics-port: must differ from --port (${port})`)
  const { options, configPath, nextVersion } = await sidecarOptions(values, env)
  const delayMs = valueOf('shutdownDelayMs', values, env)!
  const deadlineMs = valueOf('shutdownTimeoutMs', values, env)!
  // The cluster primary waits for both in one timer.
  if (delayMs + deadlineMs > RANGES.shutdownTimeoutMs.max) {
    throw invalidOption('SHUTDOWN_DELAY_MS + SHUTDOWN_TIMEOUT_MS', `at most ${RANGES.shutdownTimeoutMs.max} (ms)`, delayMs + deadlineMs)
  }
  // A secret: the environment is the place for it; the flag exists for local runs.
  const adminToken = valueOf('adminToken', values, env)
  const strict = valueOf('cacheStrict', values, env)!
  return { help: false as const, port, host, workers, metricsPort, metricsHost, options, configPath, nextVersion, delayMs, deadlineMs, adminToken, strict }
}

export async function serve(argv: string[]): Promise<void> {
  const settings = await serveSettings(argv)
  if (settings.help) return void process.stdout.write(HELP)
  const { port, host, workers, metricsPort, metricsHost, options, configPath, nextVersion, delayMs, deadlineMs, adminToken, strict } = settings
  const log = pino({ level: logLevel() })
  if (nextVersion.from === 'default' && !cluster.isWorker) log.warn({ nextVersion: '16.5', from: 'default', config: configPath ?? null }, undetectedNextVersion(configPath))
  if (workers > 1 && cluster.isPrimary) {
    // A bad next.config is reported here, once, before any worker starts. Store problems (e.g.
    // memory:// with workers) end the first worker's start, which stops the cluster with exit 1.
    resolveSidecarConfig(options)
    runPrimary({ workers, log, shutdownTimeoutMs: delayMs + deadlineMs })
    log.info({ workers, port, config: configPath ?? null, cache: typeof options.cache === 'string' ? redactUrl(options.cache) : options.cache?.name }, 'next-image-sidecar cluster starting')
    return
  }
  const clusterShare = workerShare()
  // Loads OpenTelemetry only when the OTEL_* environment asks for traces.
  const tracing = await startTracing(log)
  const { createSidecar } = await loadApp()
  const sidecar = createSidecar({ ...options, logger: log, clusterShare, metricsOnMainPort: metricsPort === undefined, adminToken })
  // An unusable store (SQLite unwritable or corrupt, Redis down) is found at start: fatal only when
  // asked to be strict; otherwise said clearly once, and the sidecar serves without it until it answers.
  const storeProblem = await Promise.race([
    sidecar.store.ping().then(() => undefined, (err: unknown) => (err as Error).message || String(err)),
    new Promise<string>((r) => setTimeout(() => r('no answer within 5 s'), 5000).unref()),
  ])
  if (storeProblem !== undefined) {
    if (strict) throw new ConfigError(`--cache-strict: the cache store ${sidecar.store.name} is unusable: ${storeProblem}`)
    log.error({ store: sidecar.store.name, reason: storeProblem }, 'cache store unusable at start; serving without it until it answers')
  }
  const server = await sidecar.listen(port, host)
  // In a --workers cluster every worker listens here too; any of them answers with the sum.
  const opsServer = metricsPort === undefined ? undefined : await sidecar.listenOps(metricsPort, metricsHost)
  reportListening()
  const { profile } = sidecar.config
  // sharp is loaded by now (the app imports it); its version is the encoder's, said with the line.
  const { default: sharp } = await import('sharp')
  const encoder = `sharp ${sharp.versions.sharp} (libvips ${sharp.versions.vips})`
  log.info(
    { nextVersion: profile.major, line: profile.line, semanticsOf: `next@${profile.reference}`, installed: nextVersion.version, from: nextVersion.from, encoder, worker: clusterShare?.index },
    `serving Next.js ${profile.line} image semantics`,
  )
  if (sidecar.config.safeMode) {
    // Next 16.5 then encodes with @next/safe-image-optimization; the sidecar applies its format filter only.
    log.warn(
      { imgOptSafeMode: true, encoder, formats: negotiableFormats(sidecar.config) },
      'experimental.imgOptSafeMode: offering only the formats Next offers in safe mode, but encoding with sharp, not @next/safe-image-optimization (bytes may differ from Next)',
    )
  }
  if (profile.major === 15 && !sidecar.config.images.dangerouslyAllowLocalIP) {
    log.info('Next 15 has no private-IP guard; the sidecar keeps its own on (--dangerously-allow-local-ip turns it off)')
  }
  const { limits } = sidecar
  log.info(
    {
      cpus: limits.container.cpus,
      limitsFrom: limits.container.source,
      memoryLimit: limits.limitBytes,
      memoryBudget: limits.budgetBytes,
      maxImageMemory: limits.maxJobBytes,
      hotCache: limits.hotCacheBytes,
      concurrency: limits.concurrency,
      libvipsThreads: limits.libvipsThreads,
      allocator: allocator(),
      worker: clusterShare?.index,
    },
    'limits',
  )
  if (allocator() === 'glibc' && process.platform === 'linux') {
    log.warn('glibc malloc with its default arenas keeps the memory of a burst (RSS stays near the peak): start through the next-image-sidecar command, which preloads jemalloc or sets MALLOC_ARENA_MAX=2, or set one of them yourself')
  }
  log.info({ url: server.url, metrics: opsServer ? `${opsServer.url}/metrics` : `${server.url}/metrics`, config: configPath ?? null, cache: sidecar.store.name, worker: clusterShare?.index }, 'next-image-sidecar listening')

  // Graceful shutdown: unready first (a load balancer stops sending), optionally wait for it to
  // notice, stop accepting, let in-flight requests finish within the deadline, close the stores.
  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    log.info({ signal, delayMs, deadlineMs }, 'shutting down: draining')
    sidecar.drain()
    await new Promise((r) => setTimeout(r, delayMs))
    const closed = new Promise((r) => server.close(r))
    // Keep-alive connections become idle as their last request finishes: close them as they do.
    const sweep = setInterval(() => server.closeIdleConnections(), 100)
    server.closeIdleConnections()
    const timer = setTimeout(() => {
      log.warn('shutdown deadline reached; closing the remaining connections')
      server.closeAllConnections()
    }, deadlineMs)
    await closed
    opsServer?.close()
    opsServer?.closeAllConnections()
    clearInterval(sweep)
    clearTimeout(timer)
    await sidecar.close()
    await tracing?.shutdown()
    log.info('shut down')
    log.flush()
    process.exit(0)
  }
  process.once('SIGTERM', () => void shutdown('SIGTERM'))
  process.once('SIGINT', () => void shutdown('SIGINT'))
}
