/**
 * Every option of the service, declared once: its flag, its environment variable, its type and range,
 * its default (a value, or the rule that derives it, in words), a one-line description and the docs
 * group. The CLI's parsing, environment fallback and checks (cli/flags.ts), `--help` (cli/help.ts), the
 * `SidecarOptions` type (options.ts) and docs/configuration.md's reference table (cli/options-docs.ts)
 * all come from here. Adding an option is one entry: with `scope: 'sidecar'` and `field: true` it is
 * read by serve, warm and purge into `SidecarOptions.<key>` with no other code (createSidecar then uses
 * it); a `serve`-scope one is read by name in cli/serve.ts. Then `UPDATE_DOCS=1 node --import tsx --test
 * test/unit/configuration-docs.test.ts` regenerates the docs.
 */
import { STORE_DEFAULTS } from '../cache/defaults.js'

/** setTimeout's longest delay; a longer one overflows and fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** What a numeric option accepts: an integer in [min, max], of a unit shown in the message. */
export interface IntegerRange {
  min: number
  max: number
  unit?: 'ms' | 'bytes'
}

const BYTES = { min: 1, max: Number.MAX_SAFE_INTEGER, unit: 'bytes' } as const satisfies IntegerRange
const TIMER = { min: 1, max: MAX_TIMER_MS, unit: 'ms' } as const satisfies IntegerRange
const PORT = { min: 1, max: 65_535 } as const satisfies IntegerRange

export type Command = 'serve' | 'warm' | 'purge'

/** The docs' and --help's sections, in the order they are shown. */
export const GROUPS = {
  serve: 'Listening and processes',
  app: 'The Next app',
  fetch: 'Fetching sources',
  cache: 'Cache',
  capacity: 'Capacity and deadlines',
  beyond: 'Beyond Next (off by default)',
  warm: 'warm',
  purge: 'purge',
} as const
export type Group = keyof typeof GROUPS

/**
 * How an option's text becomes its value:
 * - `integer`: decimal digits within `range`
 * - `bytes`: 268435456, 256Mi, 1Gi… from `range.min`
 * - `workers`: an integer within `range`, or `auto`
 * - `string`: as given (an empty variable counts as given, unless `emptyIsUnset`)
 * - `boolean`: the flag, or the variable set to `1`
 * - `list`: comma-separated names, trimmed, empty ones dropped
 * - `multiple`: the flag repeated or followed by several values (no variable)
 * - `nextVersion`: a Next.js major, line or version (next/next-version.ts)
 */
export type Kind = 'integer' | 'bytes' | 'workers' | 'string' | 'boolean' | 'list' | 'multiple' | 'nextVersion'

export interface OptionSpec {
  kind: Kind
  /** The flag, without `--`; none for a setting read from the environment only (a secret, a platform's knob). */
  flag?: string
  /** What --help shows after the flag (`N`, `MS`, `URL`…). */
  arg?: string
  /** The environment variable read when the flag is not given; none for a flag of one command run. */
  env?: string
  /** The commands that accept the flag (the variable is read wherever the option is read). */
  commands: readonly Command[]
  /**
   * Who reads it: `sidecar` options are read by serve, warm and purge alike into `SidecarOptions`
   * (cli/flags.ts, sidecarOptions); the others by their command's own code.
   */
  scope: 'sidecar' | Command
  /** A field of `SidecarOptions` (options.ts), named as this entry's key. */
  field?: true
  range?: IntegerRange
  /** The value when neither flag nor variable is given; none when the default is derived later (then `defaultText` says how). */
  default?: number | string
  /** The default in words, Markdown (--help drops the backticks). */
  defaultText: string
  /** One line for --help; per command when it means something else there. */
  help: string | { [C in Command]?: string }
  /** The docs table's description (Markdown), when it says more than `help`. */
  doc?: string
  group: Group
  /** An empty variable counts as not set (secrets: an empty token must not be a token). */
  emptyIsUnset?: true
}

/**
 * The table. Its order is the order options are read and checked in (so the first error reported is
 * the same whatever the order of the flags), and the order of --help and the docs within a group.
 */
export const OPTIONS = {
  port: {
    kind: 'integer', flag: 'port', arg: 'N', env: 'PORT', commands: ['serve', 'warm'], scope: 'serve', range: PORT, default: 3001,
    defaultText: '`3001`', help: 'port to listen on', group: 'serve',
  },
  host: {
    kind: 'string', flag: 'host', arg: 'HOST', env: 'HOST', commands: ['serve', 'warm'], scope: 'serve', default: '0.0.0.0',
    defaultText: '`0.0.0.0`', help: 'address to bind', group: 'serve',
  },
  workers: {
    kind: 'workers', flag: 'workers', arg: 'N|auto', env: 'WORKERS', commands: ['serve'], scope: 'serve', range: { min: 1, max: 256 }, default: 1,
    defaultText: '`1`', help: 'processes sharing the port (auto: one per CPU of the cgroup quota); cached images are then served on every core',
    doc: 'processes sharing the port (`auto`: one per CPU the cgroup quota allows), so cached images are served on every core; see [Workers](cache.md#workers-one-sidecar-on-every-core)',
    group: 'serve',
  },
  metricsPort: {
    kind: 'integer', flag: 'metrics-port', arg: 'N', env: 'METRICS_PORT', commands: ['serve'], scope: 'serve', range: PORT,
    defaultText: 'none: `/metrics` on `--port`, answered to loopback clients only (others get 404)',
    help: 'serve /metrics (and /healthz, /readyz) on this port only, not on --port',
    doc: 'serve `/metrics` (and `/healthz`, `/readyz`) on this port only; see [Observability](observability.md#observability)',
    group: 'serve',
  },
  metricsHost: {
    kind: 'string', flag: 'metrics-host', arg: 'HOST', env: 'METRICS_HOST', commands: ['serve'], scope: 'serve',
    defaultText: '`--host`', help: 'address of the metrics listener', group: 'serve',
  },
  frontend: {
    kind: 'string', flag: 'frontend', arg: 'URL', env: 'FRONTEND_INTERNAL_URL', commands: ['serve', 'warm'], scope: 'sidecar', field: true, default: 'http://127.0.0.1:3000',
    defaultText: '`http://127.0.0.1:3000`', help: "the Next app's internal URL; relative image URLs are fetched from it",
    doc: "the Next app's internal URL; relative image URLs are fetched from it (trusted: no private-IP guard, as Next trusts itself)",
    group: 'app',
  },
  config: {
    kind: 'string', flag: 'config', arg: 'PATH', env: 'NEXT_CONFIG_PATH', commands: ['serve', 'warm', 'purge'], scope: 'sidecar',
    defaultText: '`next.config.{js,mjs,cjs,ts,mts}` in the working directory, if any', help: "the app's next.config.{js,mjs,cjs,ts,mts}",
    doc: "the app's next.config; `images`, `basePath`, `assetPrefix` and `experimental.imgOpt*` are read, also from a config that exports a function of `(phase, { defaultConfig })` (as `next start`: phase `phase-production-server`, `defaultConfig` with the served line's own defaults, `images` exactly as that Next's `defaultConfig.images`)",
    group: 'app',
  },
  nextVersion: {
    kind: 'nextVersion', flag: 'next-version', arg: 'V', env: 'NEXT_VERSION', commands: ['serve', 'warm', 'purge'], scope: 'sidecar', field: true,
    defaultText: 'the `next` package the config resolves (16.5+ → 16.5, 16.0–16.4 → 16.4, 15.5 → 15.5), else 16.5',
    help: 'whose optimizer semantics to serve: 16.5, 16.4, 15.5 (16: 16.5, 15: 15.5)',
    doc: 'a line, `16.5`, `16.4` or `15.5`; a major, `16` (= 16.5) or `15` (= 15.5); or a full version: whose optimizer semantics to serve; see [Next.js versions](../README.md#nextjs-versions)',
    group: 'app',
  },
  dangerouslyAllowLocalIP: {
    kind: 'boolean', flag: 'dangerously-allow-local-ip', env: 'DANGEROUSLY_ALLOW_LOCAL_IP', commands: ['serve', 'warm'], scope: 'sidecar', field: true,
    defaultText: 'off', help: 'fetch absolute URLs that resolve to private/loopback addresses',
    doc: 'fetch absolute image URLs that resolve to private, loopback or link-local addresses (on Next 16 `images.dangerouslyAllowLocalIP` does the same)',
    group: 'fetch',
  },
  maximumRedirects: {
    kind: 'integer', flag: 'maximum-redirects', arg: 'N', env: 'MAXIMUM_REDIRECTS', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: { min: 0, max: 20 },
    defaultText: "Next 16: `images.maximumRedirects` (3); Next 15: fetch's 20", help: 'redirects followed for absolute URLs',
    doc: 'redirects followed for an absolute image URL; on 16.5 also for a relative one (internal and external hops together, as Next counts them)',
    group: 'fetch',
  },
  cache: {
    kind: 'string', flag: 'cache', arg: 'URL', env: 'IMAGE_CACHE_URL', commands: ['serve', 'warm', 'purge'], scope: 'sidecar', field: true, default: `sqlite://${STORE_DEFAULTS.sqlitePath}`,
    defaultText: `\`sqlite://${STORE_DEFAULTS.sqlitePath}\``,
    help: {
      serve: 'sqlite://PATH, memory://, redis://[:PASSWORD@]HOST:PORT[/DB] (rediss:// for TLS; Valkey too), redis+cluster://HOST:PORT[,HOST:PORT…] (a Cluster), redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB] (Sentinel)',
      purge: 'straight on the store (Redis: replicas told through it; SQLite: sidecars on the host follow the file within 1 s)',
    },
    doc: '`sqlite://PATH` (embedded, the default), `memory://`, `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]` / `rediss://…` (one Redis or Valkey, shared by replicas), `redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]` / `rediss+cluster://…` (Redis/Valkey Cluster: any of its nodes), or `redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB]` (the Sentinels and the name of the master they watch); see [Redis topologies](cache.md#redis-topologies-one-server-sentinel-cluster)',
    group: 'cache',
  },
  cacheMaxSize: {
    kind: 'integer', flag: 'cache-max-size', arg: 'BYTES', env: 'CACHE_MAX_SIZE', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: BYTES,
    defaultText: '`images.maximumDiskCacheSize`, else 1 GiB (SQLite); 256 MiB (memory)', help: 'SQLite/memory budget, LRU',
    doc: 'byte budget of the SQLite file and its WAL / memory store; least recently used entries are evicted beyond it ([Cache](cache.md))',
    group: 'cache',
  },
  cacheMaxEntrySize: {
    kind: 'integer', flag: 'cache-max-entry-size', arg: 'BYTES', env: 'CACHE_MAX_ENTRY_SIZE', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: BYTES,
    defaultText: '16 MiB', help: 'a larger image is served but not stored', group: 'cache',
  },
  cachePrefix: {
    kind: 'string', flag: 'cache-prefix', arg: 'P', env: 'CACHE_PREFIX', commands: ['serve', 'warm', 'purge'], scope: 'sidecar', field: true,
    defaultText: `\`${STORE_DEFAULTS.prefix}\``, help: 'key prefix in Redis, so several apps share one server', group: 'cache',
  },
  hotCacheSize: {
    kind: 'integer', flag: 'hot-cache-size', arg: 'BYTES', env: 'HOT_CACHE_SIZE', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: { ...BYTES, min: 0 },
    defaultText: '64 MiB, at most 1/16 of the memory limit', help: 'in-process tier in front of SQLite and Redis (0 turns it off)',
    doc: 'in-process tier in front of SQLite and Redis (`0` turns it off)', group: 'cache',
  },
  cacheStrict: {
    kind: 'boolean', flag: 'cache-strict', env: 'CACHE_STRICT', commands: ['serve', 'warm'], scope: 'serve',
    defaultText: 'off: serve without it', help: 'refuse to start when the cache store does not answer',
    doc: 'refuse to start when the cache store does not answer (SQLite unwritable or corrupt, Redis down); off: log it once and serve without the store until it answers',
    group: 'cache',
  },
  concurrency: {
    kind: 'integer', flag: 'concurrency', arg: 'N', env: 'CONCURRENCY', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: { min: 1, max: 1024 },
    defaultText: 'CPUs the cgroup quota allows (else the cores) ÷ workers; warm: CPUs − 1', help: 'transforms at once, per worker (warm: requests in flight)',
    doc: 'transforms running at once (per worker; warm: requests in flight)', group: 'capacity',
  },
  memoryLimit: {
    kind: 'bytes', flag: 'memory-limit', arg: 'BYTES', env: 'MEMORY_LIMIT', commands: ['serve', 'warm'], scope: 'sidecar', field: true,
    // Below the runtime's own reserve (limits.ts) there is nothing to plan with.
    range: { ...BYTES, min: 64 * 1024 ** 2 },
    defaultText: "the cgroup memory limit, else half the host's memory",
    help: 'memory to plan for (256Mi, 1Gi, …): image jobs run together only while their estimates fit',
    doc: 'memory to plan for (`268435456`, `256Mi`, `1Gi`): the hot cache, the largest image job and the budget of concurrent jobs follow from it; see [Memory](performance.md#memory)',
    group: 'capacity',
  },
  queueSize: {
    kind: 'integer', flag: 'queue-size', arg: 'N', env: 'QUEUE_SIZE', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: { min: 1, max: 1_000_000 },
    defaultText: '64 × concurrency', help: 'image jobs waiting (before their fetch); beyond → 503',
    doc: 'image jobs allowed to wait for admission (before their upstream is asked); beyond it the answer is 503 with `Retry-After: 1`',
    group: 'capacity',
  },
  maxAttempts: {
    kind: 'integer', flag: 'max-attempts', arg: 'N', env: 'MAX_ATTEMPTS', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: { min: 1, max: 20 }, default: 3,
    defaultText: '`3`', help: "attempts per image job (1 = Next's statuses, no retries)",
    doc: "attempts per image job; only transient failures (connection errors, upstream 5xx) are retried, with exponential backoff; when they run out the answer is 502. A timeout is never retried and answers Next's 504. `1` keeps every status exactly Next's",
    group: 'capacity',
  },
  timeoutMs: {
    kind: 'integer', flag: 'timeout', arg: 'MS', env: 'IMAGE_TIMEOUT_MS', commands: ['serve', 'warm', 'purge'], scope: 'sidecar', field: true, range: TIMER, default: 30_000,
    defaultText: '`30000`', help: 'deadline of one image job', doc: 'deadline of one image job, all attempts included → 504', group: 'capacity',
  },
  upstreamTimeoutMs: {
    kind: 'integer', flag: 'upstream-timeout', arg: 'MS', env: 'UPSTREAM_TIMEOUT_MS', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: TIMER, default: 7_000,
    defaultText: '`7000`', help: 'one upstream request',
    doc: "one upstream request hop (DNS, connect, headers and body; each redirect hop gets its own, as in Next's fixed 7 s) → 504",
    group: 'fetch',
  },
  headersTimeoutMs: {
    kind: 'integer', flag: 'headers-timeout', arg: 'MS', env: 'HEADERS_TIMEOUT_MS', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: TIMER, default: 10_000,
    defaultText: '`10000`', help: "a client's whole request must arrive within it, else it is disconnected",
    doc: 'a client must send its whole request within it; a client trickling its headers is answered 408 and disconnected (checked every second)',
    group: 'serve',
  },
  keepAliveTimeoutMs: {
    kind: 'integer', flag: 'keep-alive-timeout', arg: 'MS', env: 'KEEP_ALIVE_TIMEOUT_MS', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: TIMER, default: 65_000,
    defaultText: '`65000`', help: "idle keep-alive connections close (keep it above your load balancer's idle timeout)",
    doc: 'idle keep-alive connections close after it (Node holds the socket 1 s past it, so a client reusing it at that edge is not reset); keep it above the idle timeout of the load balancer or proxy in front (AWS ALB: 60 s), so it never reuses a connection the sidecar is closing. Idle connections cost a socket each and never stop new clients being served',
    group: 'serve',
  },
  cacheKeyIgnoreParams: {
    kind: 'list', flag: 'cache-key-ignore-params', arg: 'LIST', env: 'CACHE_KEY_IGNORE_PARAMS', commands: ['serve', 'warm'], scope: 'sidecar', field: true,
    defaultText: "none (Next's keys)",
    help: 'query parameters of absolute sources left out of the cache key (t,v); the fetch uses the full URL. Credential-like names (X-Amz-*, Signature, token, …) are refused',
    doc: 'comma-separated query parameter names of **absolute** sources left out of the cache key, `*` as a wildcard (`t,v`): URLs whose cache-busting parameter changes share one entry and one transform instead of one per render; the fetch still uses the full URL, a purge names the source without them (so the optimizer URLs a purge prints carry no such parameter: a CDN that cached those URLs needs a prefix or regex ban on the source). **Exposes**: every URL of the same path and the other parameters is served the one cached object, whatever the ignored parameters say, without the origin seeing that URL. So credential-like names are refused at start (`X-Amz-*`, `X-Goog-*`, `Signature`, `Expires`, `Key-Pair-Id`, `Policy`, `sig`, `se`, `st`, `sp`, `s`, `token`, `access_token`, `key`, `api_key`, `auth`, any name containing sig, token, cred, auth, expire, secret, policy, session; in any case, and any wildcard covering one, `*` included): ignoring them would serve a presigned private object to the same path with a forged, expired or no signature, as an image and as a placeholder. See [the deviations](deviations.md#where-the-sidecar-deliberately-differs-from-next)',
    group: 'beyond',
  },
  dangerouslyIgnoreCredentialParams: {
    kind: 'boolean', flag: 'dangerously-ignore-credential-params', env: 'DANGEROUSLY_IGNORE_CREDENTIAL_PARAMS', commands: ['serve', 'warm'], scope: 'sidecar', field: true,
    defaultText: 'off', help: 'allow them: a cached image is then served to the same path with any signature or none (public sources only)',
    doc: "lets `--cache-key-ignore-params` name credential-like parameters (presigned URLs of one object then share one entry). **Exposes**: the origin's access control no longer applies to cached variants: anyone who knows an object's path gets what a signed request cached. Only for sources that are public anyway (signatures used for CDN cost control, not for privacy); a warning is logged at start",
    group: 'beyond',
  },
  revalidateAfter: {
    kind: 'integer', flag: 'revalidate-after', arg: 'S', env: 'REVALIDATE_AFTER', commands: ['serve', 'warm'], scope: 'sidecar', field: true, range: { min: 1, max: 2_000_000 },
    defaultText: "off (Next's semantics)",
    help: "check a cached entry's source (its ETag/Last-Modified) once older than S seconds; replaced when it changed",
    doc: "seconds: a cached entry older than this is checked against its source in the background (a conditional request with its ETag / Last-Modified, as a stale entry's refresh); a changed source replaces it, a 304 keeps it (no transform) until the next check; responses and their headers stay as Next sends them. Picks up a changed image without a purge, at the cost of one conditional request per variant and interval: each entry is checked at most once per interval whatever the traffic, a failed check included (the entry is kept and not asked for again before the next interval), with one check per source in flight; `next_image_sidecar_source_checks_total{outcome}` counts them. **Exposes**: nothing new to clients, and no client can raise the origin's load beyond one request per cached variant and interval; see [the deviations](deviations.md#where-the-sidecar-deliberately-differs-from-next)",
    group: 'beyond',
  },
  signingKey: {
    kind: 'string', env: 'IMAGE_SIDECAR_SIGNING_KEY', commands: [], scope: 'sidecar', field: true, emptyIsUnset: true,
    defaultText: 'none: unsigned URLs served, as in Next', help: 'require signed URLs (HMAC-SHA256, `s` parameter); a secret, so no flag',
    doc: 'require signed URLs (HMAC-SHA256 in an `s` parameter): a request without a valid signature answers 403 before any work. A secret: read from the environment only, never from the command line',
    group: 'beyond',
  },
  adminToken: {
    kind: 'string', flag: 'admin-token', arg: 'T', env: 'IMAGE_SIDECAR_ADMIN_TOKEN', commands: ['serve', 'purge'], scope: 'serve', field: true, emptyIsUnset: true,
    defaultText: 'none: no `/purge`',
    help: {
      serve: 'enables POST /purge for requests with Authorization: Bearer T (ops listener with --metrics-port)',
      purge: "the sidecar's admin token, for --target",
    },
    doc: 'enables `POST /purge` for requests with `Authorization: Bearer TOKEN` (on the `--metrics-port` listener when set, else on `--port`); at least 32 bytes (`openssl rand -hex 32`), else the start is refused; repeated wrong tokens from one address back off (429). **Exposes**: whoever holds it can empty the cache (a load spike on the origins), nothing else; see [Purge](cache.md#purge-when-a-source-changes). Prefer the variable: a flag shows in `ps`',
    group: 'serve',
  },
  shutdownDelayMs: {
    kind: 'integer', env: 'SHUTDOWN_DELAY_MS', commands: [], scope: 'serve', range: { ...TIMER, min: 0 }, default: 0,
    defaultText: '`0`', help: 'on SIGTERM, stay up unready this long first (a load balancer notices)',
    doc: 'on SIGTERM, answer `/readyz` 503 and keep serving this long before closing the port, so a load balancer stops sending first; with `SHUTDOWN_TIMEOUT_MS` at most 2147483647 together',
    group: 'serve',
  },
  shutdownTimeoutMs: {
    kind: 'integer', env: 'SHUTDOWN_TIMEOUT_MS', commands: [], scope: 'serve', range: TIMER, default: 25_000,
    defaultText: '`25000`', help: 'on SIGTERM, in-flight requests get this long, then connections close',
    group: 'serve',
  },
  logLevel: {
    kind: 'string', env: 'LOG_LEVEL', commands: [], scope: 'serve', default: 'info',
    defaultText: '`info` (warm, purge: `warn`)', help: 'trace|debug|info|warn|error|silent; JSON lines on stdout',
    doc: 'pino level; JSON lines on stdout', group: 'serve',
  },
  pages: {
    kind: 'multiple', flag: 'pages', arg: 'URL...', commands: ['warm'], scope: 'warm',
    defaultText: '', help: 'rendered pages: every <img src/srcset> and <link rel=preload imagesrcset>', group: 'warm',
  },
  sitemap: {
    kind: 'string', flag: 'sitemap', arg: 'URL', commands: ['warm'], scope: 'warm',
    defaultText: '', help: 'every page of a sitemap, as --pages (a sitemap index is followed; gzip read)', group: 'warm',
  },
  from: {
    kind: 'string', flag: 'from', arg: 'PATH', commands: ['warm'], scope: 'warm',
    defaultText: '', help: 'a Next project: public/ images and .next/static/media × widths × qualities', group: 'warm',
  },
  urls: {
    kind: 'string', flag: 'urls', arg: 'FILE', commands: ['warm'], scope: 'warm',
    defaultText: '', help: 'one URL per line: an /_next/image URL, or an image (× widths × qualities)', group: 'warm',
  },
  target: {
    kind: 'string', flag: 'target', arg: 'URL', commands: ['warm', 'purge'], scope: 'warm',
    defaultText: '',
    help: {
      warm: "warm a running sidecar over HTTP instead of this process's own store",
      purge: "a running sidecar's /purge (its --metrics-port listener when it has one), with IMAGE_SIDECAR_ADMIN_TOKEN or --admin-token; it reaches every worker and replica",
    },
    group: 'warm',
  },
  placeholders: {
    kind: 'boolean', flag: 'placeholders', commands: ['warm'], scope: 'warm',
    defaultText: '', help: "also each source's blur placeholder and size (/_sidecar/placeholder), once per source", group: 'warm',
  },
  dryRun: {
    kind: 'boolean', flag: 'dry-run', commands: ['warm'], scope: 'warm',
    defaultText: '', help: 'print the plan with counts, change nothing', group: 'warm',
  },
  prefix: {
    kind: 'string', flag: 'prefix', arg: 'P', commands: ['purge'], scope: 'purge',
    defaultText: '', help: 'every source starting with P', group: 'purge',
  },
  all: {
    kind: 'boolean', flag: 'all', commands: ['purge'], scope: 'purge',
    defaultText: '', help: 'every cached variant', group: 'purge',
  },
} as const satisfies Record<string, OptionSpec>

export type OptionKey = keyof typeof OPTIONS
type Table = typeof OPTIONS

/** The value an entry's kind gives. */
export type ValueOfKind<K extends Kind> = K extends 'integer' | 'bytes' | 'workers' ? number : K extends 'boolean' ? boolean : K extends 'list' | 'multiple' ? string[] : string

/** The `SidecarOptions` fields the table declares (options.ts adds the few of richer types and the programmatic ones). */
export type TableFields = { [K in OptionKey as Table[K] extends { field: true } ? K : never]?: ValueOfKind<Table[K]['kind']> }

/** An entry by key, typed as a plain OptionSpec (the table's literal types are for deriving `SidecarOptions`). */
export const option = (key: OptionKey): OptionSpec => OPTIONS[key]

/** The range of every numeric option, by key. */
export const RANGES = Object.fromEntries(Object.entries(OPTIONS as Record<string, OptionSpec>).flatMap(([k, s]) => (s.range ? [[k, s.range]] : []))) as {
  [K in OptionKey as Table[K] extends { range: IntegerRange } ? K : never]: IntegerRange
}
