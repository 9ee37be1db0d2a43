#!/usr/bin/env node
import cluster from 'node:cluster'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { reportListening, runPrimary, workerShare } from './cluster.js'
import { redactUrl } from './cache/redis-url.js'
import { ConfigError } from './errors.js'
import { resolveSidecarConfig } from './images-config.js'
import { detectNextVersion, majorOfVersion, parseNextVersion, type NextMajor } from './next-version.js'
import { findNextConfig, loadNextConfig } from './next-config.js'
import { DEFAULTS, describeRange, invalidOption, parseInteger, RANGES, type IntegerRange, type SidecarOptions } from './options.js'
import { allocator, defaultConcurrency, parseBytes, readContainerLimits } from './limits.js'
import { collectRequests, planVariants, progressReporter, warmVariants } from './warm.js'
import { startTracing } from './tracing.js'

// The service itself (Express, sharp, SQLite, Redis clients) is imported only where it runs, so a
// `--workers` primary, which serves nothing, stays small.
const loadApp = () => import('./app.js')

const HELP = `next-image-sidecar — Next.js's /_next/image optimizer (15.5 and 16) as its own service

Usage: next-image-sidecar [options]                serve
       next-image-sidecar warm [sources] [options] fill the cache before traffic arrives

Options (each has an environment variable; the flag wins):
  --port N            port to listen on                      PORT                   (3001)
  --host HOST         address to bind                        HOST                   (0.0.0.0)
  --metrics-port N    serve /metrics (and /healthz, /readyz) METRICS_PORT          (none: /metrics on --port)
                      on this port only, not on --port
  --metrics-host HOST  address of the metrics listener       METRICS_HOST           (--host)
  --frontend URL      the Next app's internal URL; relative  FRONTEND_INTERNAL_URL  (http://127.0.0.1:3000)
                      image URLs are fetched from it
  --config PATH       the app's next.config.{js,mjs,cjs,ts}  NEXT_CONFIG_PATH       (./next.config.* if present)
  --next-version 15|16  whose optimizer semantics to serve   NEXT_VERSION           (the next package the
                                                                                    config resolves, else 16)
  --dangerously-allow-local-ip  fetch absolute URLs that      DANGEROUSLY_ALLOW_LOCAL_IP=1  (off)
                      resolve to private/loopback addresses
  --maximum-redirects N  redirects followed for absolute URLs MAXIMUM_REDIRECTS     (Next 16: images.
                      (0–20)                                                        maximumRedirects, 3;
                                                                                    Next 15: fetch's 20)
  --cache URL         sqlite://PATH, memory://,              IMAGE_CACHE_URL        (${DEFAULTS.cache})
                      redis://[:PASSWORD@]HOST:PORT[/DB] (rediss:// for TLS; Valkey too),
                      redis+cluster://HOST:PORT[,HOST:PORT…] (a Cluster),
                      redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB] (Sentinel)
  --cache-max-size BYTES   SQLite/memory budget, LRU         CACHE_MAX_SIZE         (1 GiB SQLite, 256 MiB memory)
  --cache-max-entry-size BYTES  larger images are not stored CACHE_MAX_ENTRY_SIZE   (16 MiB)
  --cache-prefix P    key prefix in Redis                    CACHE_PREFIX           (next-image-sidecar:)
  --cache-strict      refuse to start when the cache store   CACHE_STRICT=1         (off: serve without it)
                      does not answer
  --hot-cache-size BYTES  in-process tier before SQLite/Redis HOT_CACHE_SIZE        (64 MiB, at most 1/16 of
                                                                                    the memory limit; 0 = off)
  --workers N|auto    processes sharing the port (auto: one  WORKERS                (1)
                      per CPU of the cgroup quota); cached
                      images are then served on every core
  --concurrency N     transforms at once, per worker (warm:  CONCURRENCY            (CPUs of the quota /
                      requests in flight)                                           workers; warm: CPUs - 1)
  --memory-limit BYTES  memory to plan for (256Mi, 1Gi, …):  MEMORY_LIMIT           (the cgroup limit, else
                      image jobs run together only while                            half the host memory)
                      their estimates fit, see README
  --queue-size N      image jobs waiting (before their fetch); QUEUE_SIZE           (64 × concurrency)
                      beyond → 503
  --max-attempts N    attempts per image job (1 = Next's     MAX_ATTEMPTS           (${DEFAULTS.maxAttempts})
                      statuses, no retries)
  --timeout MS        deadline of one image job              IMAGE_TIMEOUT_MS       (${DEFAULTS.timeoutMs})
  --upstream-timeout MS  one upstream request                UPSTREAM_TIMEOUT_MS    (${DEFAULTS.upstreamTimeoutMs})
  --headers-timeout MS  a client's whole request must arrive HEADERS_TIMEOUT_MS     (${DEFAULTS.headersTimeoutMs})
                      within it, else it is disconnected
  --keep-alive-timeout MS  idle keep-alive connections close  KEEP_ALIVE_TIMEOUT_MS  (${DEFAULTS.keepAliveTimeoutMs})
                      (keep it above your load balancer's idle timeout)
  --help              show this text
Logging: LOG_LEVEL (trace|debug|info|warn|error|silent), JSON lines on stdout.
Tracing: off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
OTEL_TRACES_EXPORTER=otlp|console) is set; OTLP over HTTP, the standard OTEL_* variables apply.

warm sources (combinable):
  --pages URL...      rendered pages: every <img src/srcset> and <link rel=preload imagesrcset>
  --sitemap URL       every page of a sitemap, as --pages (a sitemap index is followed; gzip read)
  --from PATH         a Next project: public/ images and .next/static/media × widths × qualities
  --urls FILE         one URL per line: an /_next/image URL, or an image (× widths × qualities)
warm options:
  --target URL        warm a running sidecar over HTTP instead of this process's own store
  --dry-run           print the plan with counts, change nothing
Each variant is warmed in every format the config negotiates plus the source-format fallback.
Fresh entries are skipped (a second run resumes); the exit code is 1 if anything failed.
`

const COMMON = {
  port: { type: 'string' },
  host: { type: 'string' },
  frontend: { type: 'string' },
  config: { type: 'string' },
  'next-version': { type: 'string' },
  'dangerously-allow-local-ip': { type: 'boolean' },
  'maximum-redirects': { type: 'string' },
  cache: { type: 'string' },
  'cache-max-size': { type: 'string' },
  'cache-max-entry-size': { type: 'string' },
  'cache-prefix': { type: 'string' },
  'hot-cache-size': { type: 'string' },
  'cache-strict': { type: 'boolean' },
  concurrency: { type: 'string' },
  'queue-size': { type: 'string' },
  'memory-limit': { type: 'string' },
  'max-attempts': { type: 'string' },
  timeout: { type: 'string' },
  'upstream-timeout': { type: 'string' },
  'headers-timeout': { type: 'string' },
  'keep-alive-timeout': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

const SERVE = {
  ...COMMON,
  workers: { type: 'string' },
  'metrics-port': { type: 'string' },
  'metrics-host': { type: 'string' },
} as const

const WARM = {
  ...COMMON,
  pages: { type: 'string', multiple: true },
  sitemap: { type: 'string' },
  from: { type: 'string' },
  urls: { type: 'string' },
  target: { type: 'string' },
  'dry-run': { type: 'boolean' },
} as const

type Values = Partial<Record<Exclude<keyof typeof COMMON, 'help' | 'cache-strict' | 'dangerously-allow-local-ip'>, string>> & {
  'dangerously-allow-local-ip'?: boolean
}

/** Which Next line's semantics to serve, and how that was decided (logged at start). */
interface NextVersionChoice {
  major: NextMajor
  /** The installed version when detected, else undefined. */
  version?: string
  from: '--next-version' | 'NEXT_VERSION' | 'detected' | 'default'
}

/**
 * The flag, else the environment, else the `next` package the config file resolves (its
 * directory's node_modules), else 16. An unsupported version is refused, never guessed.
 */
function chooseNextVersion(flag: string | undefined, configPath: string | undefined): NextVersionChoice {
  if (flag) return { major: parseNextVersion(flag, '--next-version'), from: '--next-version' }
  const env = process.env.NEXT_VERSION
  if (env) return { major: parseNextVersion(env, 'NEXT_VERSION'), from: 'NEXT_VERSION' }
  const version = configPath ? detectNextVersion(configPath) : undefined
  if (version) return { major: majorOfVersion(version, `the next package beside ${configPath}`), version, from: 'detected' }
  return { major: 16, from: 'default' }
}

/**
 * An option's raw value and the name a message gives it: the flag when given, else the environment
 * variable (`--timeout (IMAGE_TIMEOUT_MS)`), so an error points at where the value came from.
 */
function flagOrEnv(flag: string, value: string | undefined, envName: string): { name: string; raw: string | undefined } {
  if (value !== undefined) return { name: flag, raw: value }
  const raw = process.env[envName]
  return { name: `${flag} (${envName})`, raw: raw === '' ? undefined : raw }
}

/** A numeric option within its range (options.ts, RANGES), else undefined when not given. */
function optionalInt(option: { name: string; raw: string | undefined }, range: IntegerRange): number | undefined {
  return option.raw === undefined ? undefined : parseInteger(option.name, option.raw, range)
}

function intOption(option: { name: string; raw: string | undefined }, range: IntegerRange, fallback: number): number {
  return optionalInt(option, range) ?? fallback
}

/** The environment-only settings (no flag). */
const envInt = (name: string, range: IntegerRange, fallback: number) => intOption({ name, raw: process.env[name] || undefined }, range, fallback)

/** Said loudly at start when the Next line was not read from the app: a 15.5 app served as 16 answers 400 to its own URLs. */
function undetectedNextVersion(configPath: string | undefined): string {
  const why = configPath ? `no next package resolvable beside ${configPath}` : 'no next.config found'
  return (
    `Next.js version not detected (${why}): serving Next 16 image semantics by default. ` +
    'A Next 15.5 app served this way gets 400 for w=16 and for qualities other than 75. ' +
    'Set NEXT_VERSION=15 or 16 (or --next-version 15|16) to match the app'
  )
}

/** The sidecar options from flags and environment, shared by `serve` and `warm`. */
async function sidecarOptions(values: Values): Promise<{ options: SidecarOptions; configPath: string | undefined; nextVersion: NextVersionChoice }> {
  const env = process.env
  const configPath = values.config ?? env.NEXT_CONFIG_PATH ?? findNextConfig(process.cwd())
  const nextVersion = chooseNextVersion(values['next-version'], configPath)
  const options: SidecarOptions = {
    frontend: values.frontend ?? env.FRONTEND_INTERNAL_URL ?? 'http://127.0.0.1:3000',
    nextConfig: configPath ? await loadNextConfig(configPath, nextVersion.major) : {},
    nextVersion: nextVersion.major,
    dangerouslyAllowLocalIP: values['dangerously-allow-local-ip'] === true || env.DANGEROUSLY_ALLOW_LOCAL_IP === '1',
    maximumRedirects: optionalInt(flagOrEnv('--maximum-redirects', values['maximum-redirects'], 'MAXIMUM_REDIRECTS'), RANGES.maximumRedirects),
    cache: values.cache ?? env.IMAGE_CACHE_URL ?? DEFAULTS.cache,
    cacheMaxSize: optionalInt(flagOrEnv('--cache-max-size', values['cache-max-size'], 'CACHE_MAX_SIZE'), RANGES.cacheMaxSize),
    cacheMaxEntrySize: optionalInt(flagOrEnv('--cache-max-entry-size', values['cache-max-entry-size'], 'CACHE_MAX_ENTRY_SIZE'), RANGES.cacheMaxEntrySize),
    cachePrefix: values['cache-prefix'] ?? env.CACHE_PREFIX,
    hotCacheSize: optionalInt(flagOrEnv('--hot-cache-size', values['hot-cache-size'], 'HOT_CACHE_SIZE'), RANGES.hotCacheSize),
    concurrency: optionalInt(flagOrEnv('--concurrency', values.concurrency, 'CONCURRENCY'), RANGES.concurrency),
    memoryLimit: bytesOption(flagOrEnv('--memory-limit', values['memory-limit'], 'MEMORY_LIMIT')),
    queueSize: optionalInt(flagOrEnv('--queue-size', values['queue-size'], 'QUEUE_SIZE'), RANGES.queueSize),
    maxAttempts: intOption(flagOrEnv('--max-attempts', values['max-attempts'], 'MAX_ATTEMPTS'), RANGES.maxAttempts, DEFAULTS.maxAttempts),
    timeoutMs: intOption(flagOrEnv('--timeout', values.timeout, 'IMAGE_TIMEOUT_MS'), RANGES.timeoutMs, DEFAULTS.timeoutMs),
    upstreamTimeoutMs: intOption(flagOrEnv('--upstream-timeout', values['upstream-timeout'], 'UPSTREAM_TIMEOUT_MS'), RANGES.upstreamTimeoutMs, DEFAULTS.upstreamTimeoutMs),
    headersTimeoutMs: intOption(flagOrEnv('--headers-timeout', values['headers-timeout'], 'HEADERS_TIMEOUT_MS'), RANGES.headersTimeoutMs, DEFAULTS.headersTimeoutMs),
    keepAliveTimeoutMs: intOption(flagOrEnv('--keep-alive-timeout', values['keep-alive-timeout'], 'KEEP_ALIVE_TIMEOUT_MS'), RANGES.keepAliveTimeoutMs, DEFAULTS.keepAliveTimeoutMs),
    // A secret: read from the environment only, never from the command line.
    signingKey: env.IMAGE_SIDECAR_SIGNING_KEY || undefined,
  }
  return { options, configPath, nextVersion }
}

/** `auto`: one worker per CPU the cgroup quota allows (a 1-CPU container on a 16-core host runs one). */
function workersOption(option: { name: string; raw: string | undefined }): number {
  if (option.raw === 'auto') return defaultConcurrency(readContainerLimits().cpus)
  if (option.raw !== undefined && !(/^[0-9]+$/.test(option.raw) && Number(option.raw) >= RANGES.workers.min && Number(option.raw) <= RANGES.workers.max)) {
    throw invalidOption(option.name, `${describeRange(RANGES.workers)} or "auto"`, option.raw)
  }
  return option.raw === undefined ? 1 : Number(option.raw)
}

function bytesOption(option: { name: string; raw: string | undefined }): number | undefined {
  if (option.raw === undefined) return undefined
  const { min, max } = RANGES.memoryLimit
  const bytes = parseBytes(option.raw)
  if (bytes === undefined || bytes < min || bytes > max) throw invalidOption(option.name, `bytes (268435456, 256Mi, 1Gi) from ${min / 1024 ** 2}Mi`, option.raw)
  return bytes
}

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: SERVE, strict: true })
  if (values.help) return void process.stdout.write(HELP)
  const port = intOption(flagOrEnv('--port', values.port, 'PORT'), RANGES.port, 3001)
  const host = values.host ?? process.env.HOST ?? '0.0.0.0'
  const workers = workersOption(flagOrEnv('--workers', values.workers, 'WORKERS'))
  const metricsPort = optionalInt(flagOrEnv('--metrics-port', values['metrics-port'], 'METRICS_PORT'), RANGES.port)
  const metricsHost = values['metrics-host'] ?? process.env.METRICS_HOST ?? host
  if (metricsPort !== undefined && metricsPort === port) throw new ConfigError(`--metrics-port: must differ from --port (${port})`)
  const { options, configPath, nextVersion } = await sidecarOptions(values)
  const log = pino({ level: process.env.LOG_LEVEL ?? 'info' })
  const delayMs = envInt('SHUTDOWN_DELAY_MS', RANGES.shutdownDelayMs, 0)
  const deadlineMs = envInt('SHUTDOWN_TIMEOUT_MS', RANGES.shutdownTimeoutMs, 25_000)
  // The cluster primary waits for both in one timer.
  if (delayMs + deadlineMs > RANGES.shutdownTimeoutMs.max) {
    throw invalidOption('SHUTDOWN_DELAY_MS + SHUTDOWN_TIMEOUT_MS', `at most ${RANGES.shutdownTimeoutMs.max} (ms)`, delayMs + deadlineMs)
  }
  if (nextVersion.from === 'default' && !cluster.isWorker) log.warn({ nextVersion: 16, from: 'default', config: configPath ?? null }, undetectedNextVersion(configPath))
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
  const sidecar = createSidecar({ ...options, logger: log, clusterShare, metricsOnMainPort: metricsPort === undefined })
  // An unusable store (SQLite unwritable or corrupt, Redis down) is found at start: fatal only when
  // asked to be strict; otherwise said clearly once, and the sidecar serves without it until it answers.
  const strict = values['cache-strict'] === true || process.env.CACHE_STRICT === '1'
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
  log.info(
    { nextVersion: profile.major, semanticsOf: `next@${profile.reference}`, installed: nextVersion.version, from: nextVersion.from, worker: clusterShare?.index },
    `serving Next.js ${profile.major} image semantics`,
  )
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

async function warm(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: WARM, strict: true, allowPositionals: true })
  if (values.help) return void process.stdout.write(HELP), 0
  const { options, configPath, nextVersion } = await sidecarOptions(values)
  if (nextVersion.from === 'default') process.stderr.write(`warm: ${undetectedNextVersion(configPath)}\n`)
  const config = resolveSidecarConfig(options)
  // `--pages A B C`: parseArgs sees B and C as positionals; they are pages too.
  if (positionals.length > 0 && !values.pages) throw new ConfigError(`warm: unexpected argument "${positionals[0]}" (pages go after --pages)`)
  const sources = { pages: [...(values.pages ?? []), ...positionals], sitemap: values.sitemap, from: values.from, urls: values.urls }
  if (!sources.pages?.length && !sources.sitemap && !sources.from && !sources.urls) {
    throw new ConfigError('warm: name at least one source: --pages URL..., --sitemap URL, --from PATH or --urls FILE')
  }
  const { requests, errors } = await collectRequests(sources, config, { timeoutMs: options.timeoutMs })
  const variants = planVariants(requests, config, options.signingKey)
  const formats = [...config.images.formats, 'source format']
  process.stderr.write(`warm: ${requests.length} image requests × ${formats.length} formats (${formats.join(', ')}) = ${variants.length} variants\n`)
  for (const error of errors) process.stderr.write(`warm: could not read ${error}\n`)
  if (values['dry-run']) {
    for (const v of variants) process.stdout.write(`${v.accept.padEnd(10)} ${v.path}\n`)
    return errors.length > 0 ? 1 : 0
  }
  const concurrency = options.concurrency ?? Math.max(Math.ceil(readContainerLimits().cpus) - 1, 1)
  // A warm run on a live node leaves room for traffic: one core fewer, also for transforms.
  const { createSidecar } = await loadApp()
  const sidecar = values.target ? values.target : createSidecar({ ...options, concurrency, logger: pino({ level: process.env.LOG_LEVEL ?? 'warn' }) })
  const summary = await warmVariants(sidecar, variants, { concurrency, timeoutMs: options.timeoutMs, onProgress: progressReporter(process.stderr) })
  let transforms = ''
  if (typeof sidecar !== 'string') {
    transforms = `, ${(await sidecar.metrics.transforms.get()).values[0]?.value ?? 0} transforms here`
    await sidecar.close()
  }
  process.stdout.write(
    `warm: ${summary.variants} variants: ${summary.warmed} warmed, ${summary.skipped} already fresh, ${summary.failed.length} failed; ` +
      `${(summary.bytesWritten / 1024 ** 2).toFixed(1)} MiB written in ${(summary.elapsedMs / 1000).toFixed(1)} s${transforms}\n`,
  )
  for (const { variant, reason } of summary.failed) process.stdout.write(`  failed: ${variant.path} (Accept: ${variant.accept}): ${reason}\n`)
  return summary.failed.length > 0 || errors.length > 0 ? 1 : 0
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'warm') process.exitCode = await warm(argv.slice(1))
  else await serve(argv)
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const message = err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? (err as Error).message : ((err as Error).stack ?? String(err))
  process.stderr.write(`next-image-sidecar: ${message}\n`)
  process.exit(1)
})
