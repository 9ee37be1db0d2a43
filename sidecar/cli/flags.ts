/** The command line's flags, their environment fallbacks and `--help`, turned into SidecarOptions. */
import { detectNextVersion, majorOfVersion, parseNextVersion, type NextMajor } from '../next/next-version.js'
import { findNextConfig, loadNextConfig } from '../next/next-config.js'
import { DEFAULTS, describeRange, invalidOption, parseInteger, RANGES, type IntegerRange, type SidecarOptions } from '../server/options.js'
import { defaultConcurrency, parseBytes, readContainerLimits } from '../runtime/limits.js'


export const HELP = `next-image-sidecar — Next.js's /_next/image optimizer (15.5 and 16) as its own service

Usage: next-image-sidecar [options]                serve
       next-image-sidecar warm [sources] [options] fill the cache before traffic arrives
       next-image-sidecar purge <src…> | --prefix P | --all  (--target URL | --cache URL)
                                                   remove every cached variant of sources

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
  --revalidate-after S  check a cached entry's source (its  REVALIDATE_AFTER       (off: Next's semantics)
                      ETag/Last-Modified) once older than S
                      seconds; replaced when it changed
  --cache-key-ignore-params LIST  query parameters of      CACHE_KEY_IGNORE_PARAMS  (none)
                      absolute sources left out of the cache key
                      (X-Amz-*,t); the fetch uses the full URL
  --admin-token T     enables POST /purge for requests with   IMAGE_SIDECAR_ADMIN_TOKEN  (none: no /purge)
                      Authorization: Bearer T (ops listener with --metrics-port)
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
  --placeholders      also each source's blur placeholder and size (/_sidecar/placeholder),
                      once per source
  --dry-run           print the plan with counts, change nothing
Each variant is warmed in every format the config negotiates plus the source-format fallback.
Fresh entries are skipped (a second run resumes); the exit code is 1 if anything failed.

purge (one of): SRC… (sources as the app requests them: /images/hero.jpg, https://cdn.example/a.png),
  --prefix P (every source starting with P), --all
purge options:
  --target URL        a running sidecar's /purge (its --metrics-port listener when it has one), with
                      IMAGE_SIDECAR_ADMIN_TOKEN or --admin-token; it reaches every worker and replica
  --cache URL         straight on the store (Redis: replicas told through it; SQLite: sidecars on the
                      host follow the file within 1 s)
Prints the count and the optimizer URLs that were cached (one a line, for a CDN purge); exit 1 when
nothing could be reached.
`

export const COMMON = {
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
  'revalidate-after': { type: 'string' },
  'cache-key-ignore-params': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

export const SERVE = {
  ...COMMON,
  'admin-token': { type: 'string' },
  workers: { type: 'string' },
  'metrics-port': { type: 'string' },
  'metrics-host': { type: 'string' },
} as const

export const WARM = {
  ...COMMON,
  pages: { type: 'string', multiple: true },
  sitemap: { type: 'string' },
  from: { type: 'string' },
  urls: { type: 'string' },
  target: { type: 'string' },
  placeholders: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
} as const

export const PURGE = {
  cache: { type: 'string' },
  'cache-prefix': { type: 'string' },
  config: { type: 'string' },
  'next-version': { type: 'string' },
  target: { type: 'string' },
  'admin-token': { type: 'string' },
  prefix: { type: 'string' },
  all: { type: 'boolean' },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

export type Values = Partial<Record<Exclude<keyof typeof COMMON, 'help' | 'cache-strict' | 'dangerously-allow-local-ip'>, string>> & {
  'dangerously-allow-local-ip'?: boolean
}

/** Which Next line's semantics to serve, and how that was decided (logged at start). */
export interface NextVersionChoice {
  major: NextMajor
  /** The installed version when detected, else undefined. */
  version?: string
  from: '--next-version' | 'NEXT_VERSION' | 'detected' | 'default'
}

/**
 * The flag, else the environment, else the `next` package the config file resolves (its
 * directory's node_modules), else 16. An unsupported version is refused, never guessed.
 */
export function chooseNextVersion(flag: string | undefined, configPath: string | undefined): NextVersionChoice {
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
export function flagOrEnv(flag: string, value: string | undefined, envName: string): { name: string; raw: string | undefined } {
  if (value !== undefined) return { name: flag, raw: value }
  const raw = process.env[envName]
  return { name: `${flag} (${envName})`, raw: raw === '' ? undefined : raw }
}

/** A numeric option within its range (options.ts, RANGES), else undefined when not given. */
export function optionalInt(option: { name: string; raw: string | undefined }, range: IntegerRange): number | undefined {
  return option.raw === undefined ? undefined : parseInteger(option.name, option.raw, range)
}

export function intOption(option: { name: string; raw: string | undefined }, range: IntegerRange, fallback: number): number {
  return optionalInt(option, range) ?? fallback
}

/** The environment-only settings (no flag). */
export const envInt = (name: string, range: IntegerRange, fallback: number) => intOption({ name, raw: process.env[name] || undefined }, range, fallback)

/** Said loudly at start when the Next line was not read from the app: a 15.5 app served as 16 answers 400 to its own URLs. */
export function undetectedNextVersion(configPath: string | undefined): string {
  const why = configPath ? `no next package resolvable beside ${configPath}` : 'no next.config found'
  return (
    `Next.js version not detected (${why}): serving Next 16 image semantics by default. ` +
    'A Next 15.5 app served this way gets 400 for w=16 and for qualities other than 75. ' +
    'Set NEXT_VERSION=15 or 16 (or --next-version 15|16) to match the app'
  )
}

/** The sidecar options from flags and environment, shared by `serve` and `warm`. */
export async function sidecarOptions(values: Values): Promise<{ options: SidecarOptions; configPath: string | undefined; nextVersion: NextVersionChoice }> {
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
    cacheKeyIgnoreParams: (values['cache-key-ignore-params'] ?? env.CACHE_KEY_IGNORE_PARAMS)?.split(',').map((n) => n.trim()).filter(Boolean),
    revalidateAfter: optionalInt(flagOrEnv('--revalidate-after', values['revalidate-after'], 'REVALIDATE_AFTER'), RANGES.revalidateAfter),
    // A secret: read from the environment only, never from the command line.
    signingKey: env.IMAGE_SIDECAR_SIGNING_KEY || undefined,
  }
  return { options, configPath, nextVersion }
}

/** `auto`: one worker per CPU the cgroup quota allows (a 1-CPU container on a 16-core host runs one). */
export function workersOption(option: { name: string; raw: string | undefined }): number {
  if (option.raw === 'auto') return defaultConcurrency(readContainerLimits().cpus)
  if (option.raw !== undefined && !(/^[0-9]+$/.test(option.raw) && Number(option.raw) >= RANGES.workers.min && Number(option.raw) <= RANGES.workers.max)) {
    throw invalidOption(option.name, `${describeRange(RANGES.workers)} or "auto"`, option.raw)
  }
  return option.raw === undefined ? 1 : Number(option.raw)
}

export function bytesOption(option: { name: string; raw: string | undefined }): number | undefined {
  if (option.raw === undefined) return undefined
  const { min, max } = RANGES.memoryLimit
  const bytes = parseBytes(option.raw)
  if (bytes === undefined || bytes < min || bytes > max) throw invalidOption(option.name, `bytes (268435456, 256Mi, 1Gi) from ${min / 1024 ** 2}Mi`, option.raw)
  return bytes
}
