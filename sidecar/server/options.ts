import type { Logger } from 'pino'
import { ConfigError } from '../errors.js'
import type { CacheStore } from '../cache/types.js'
import type { ClusterShare } from '../runtime/cluster.js'
import type { NextMajor } from '../next/next-version.js'
import type { Resolver } from '../upstream/external.js'

/** Options of `createSidecar`. Everything but `frontend` has a default. */
export interface SidecarOptions {
  /**
   * The frontend's internal URL (e.g. `http://frontend:3000`): relative image URLs are
   * fetched from it, as Next fetches them from itself. Trusted: no private-IP guard.
   */
  frontend: string | URL
  /**
   * The user's next.config object (what the file exports, after calling it if it is a
   * function). Only `images`, `basePath`, `assetPrefix` and `experimental.imgOpt*` are read.
   */
  nextConfig?: Record<string, unknown>
  /**
   * The Next.js major whose optimizer semantics apply: config defaults and schema, validation,
   * upstream rules (see README, Next.js versions). Default 16. The CLI detects it from the `next`
   * package the config file resolves.
   */
  nextVersion?: NextMajor
  /**
   * Allow absolute image URLs that resolve to private, loopback or link-local addresses (the
   * private-IP guard is on by default on every Next line; Next 15 has none, a deliberate deviation).
   * On Next 16 `images.dangerouslyAllowLocalIP` does the same.
   */
  dangerouslyAllowLocalIP?: boolean
  /**
   * Redirects followed for an absolute image URL, 0–20. Default: `images.maximumRedirects` on
   * Next 16 (3), fetch's 20 on Next 15.
   */
  maximumRedirects?: number
  /**
   * `sqlite://PATH` (default `sqlite://.cache/next-image-sidecar/cache.sqlite`), `memory://`,
   * `redis://HOST:PORT` / `rediss://…` (also Valkey), or a CacheStore of your own.
   */
  cache?: string | CacheStore
  /** Byte budget of the SQLite and memory stores (LRU eviction). Default 1 GiB (SQLite), 256 MiB (memory). */
  cacheMaxSize?: number
  /** Images larger than this are served but not stored. Default 16 MiB. */
  cacheMaxEntrySize?: number
  /** Key prefix in Redis, so several apps can share one server. Default `next-image-sidecar:`. */
  cachePrefix?: string
  /** Bytes of the in-process hot tier in front of SQLite/Redis; 0 turns it off. Default 64 MiB, or a sixteenth of the memory limit when smaller. */
  hotCacheSize?: number
  /**
   * Transforms running at once. Default: the CPUs the cgroup quota allows (else the cores), divided
   * among `--workers`, at least 1.
   */
  concurrency?: number
  /**
   * The memory limit to plan for, bytes. Default: the cgroup's memory limit, else half the host's
   * memory. The transforms' estimated working sets share what is left after the runtime and the
   * hot cache (see README, Memory).
   */
  memoryLimit?: number
  /** Transforms allowed to wait for a slot; beyond it requests get 503 + Retry-After. Default 64 per slot. */
  queueSize?: number
  /** Attempts per image job; transient failures are retried with backoff. Default 3; 1 keeps Next's statuses. */
  maxAttempts?: number
  /** Deadline for one image job (all attempts), ms. Default 30000. */
  timeoutMs?: number
  /** Timeout of one upstream request, connect and body, ms. Default 7000 (Next's). */
  upstreamTimeoutMs?: number
  /**
   * A client must send its whole request (line and headers) within this, ms; slower clients are
   * disconnected, so trickled headers cannot hold sockets. Default 10000.
   */
  headersTimeoutMs?: number
  /**
   * How long an idle keep-alive connection stays open, ms. Default 65000: longer than the idle
   * timeout of common load balancers and proxies in front (AWS ALB 60 s), so they never reuse a
   * connection the sidecar is closing. Idle connections cost a socket each, nothing more.
   */
  keepAliveTimeoutMs?: number
  /**
   * Serve `/metrics` on the image port too. Default true; the CLI sets it false with `--metrics-port`,
   * so an image origin exposed to the internet does not publish its metrics (see `listenOps`).
   */
  metricsOnMainPort?: boolean
  /** A pino logger; default: JSON to stdout at LOG_LEVEL (info). */
  logger?: Logger
  /**
   * Require signed URLs (HMAC-SHA256, see signature.ts): requests without a valid `s` answer 403
   * before any work. Off by default, as in Next. The CLI reads it from IMAGE_SIDECAR_SIGNING_KEY.
   */
  signingKey?: string
  /**
   * Enables `POST /purge` (on the ops listener, and on the image port only while /metrics is served
   * there), for requests with `Authorization: Bearer <adminToken>`. Unset: no such route (404).
   * The CLI reads it from --admin-token or IMAGE_SIDECAR_ADMIN_TOKEN.
   */
  adminToken?: string
  /**
   * Beyond Next (off by default): a cached entry older than this many seconds is checked against its
   * source with its validators (a conditional request, in the background) and replaced if the source
   * changed; the response and its headers stay as Next sends them. The CLI: --revalidate-after.
   */
  revalidateAfter?: number
  /**
   * Beyond Next (off by default): query parameters of absolute sources left out of the cache key
   * (`*` as a wildcard: `['X-Amz-*', 't']`), so rotating signatures share one entry and one
   * transform; the fetch still uses the full URL. The CLI: --cache-key-ignore-params.
   */
  cacheKeyIgnoreParams?: string[]
  /** DNS resolution for absolute URLs; injectable for tests. Default: dns.lookup({ all: true }). */
  resolve?: Resolver
  /**
   * Set by the CLI in `--workers N` mode: this process is worker `index` of `count` sharing one
   * port. Single flight then goes through the cluster primary (or Redis), /metrics sums every
   * worker, the SQLite budget is split between the workers, and concurrency defaults to an
   * equal share of the cores.
   */
  clusterShare?: ClusterShare
}

export const DEFAULTS = {
  cache: 'sqlite://.cache/next-image-sidecar/cache.sqlite',
  queuePerSlot: 64,
  maxAttempts: 3,
  timeoutMs: 30_000,
  upstreamTimeoutMs: 7_000,
  headersTimeoutMs: 10_000,
  keepAliveTimeoutMs: 65_000,
}

/** setTimeout's longest delay; a longer one overflows and fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** What a numeric option accepts: an integer in [min, max], of a unit shown in the message. */
export interface IntegerRange {
  min: number
  max: number
  unit?: 'ms' | 'bytes'
}

const BYTES: IntegerRange = { min: 1, max: Number.MAX_SAFE_INTEGER, unit: 'bytes' }
const TIMER: IntegerRange = { min: 1, max: MAX_TIMER_MS, unit: 'ms' }

/**
 * The range of every numeric option (CLI flag, environment variable or `SidecarOptions` field):
 * checked once at start, so nothing later meets a value it cannot use (a timer past 2^31−1 ms,
 * a port past 65535, a count no machine has).
 */
export const RANGES = {
  port: { min: 1, max: 65_535 },
  workers: { min: 1, max: 256 },
  maximumRedirects: { min: 0, max: 20 },
  cacheMaxSize: BYTES,
  cacheMaxEntrySize: BYTES,
  hotCacheSize: { ...BYTES, min: 0 },
  concurrency: { min: 1, max: 1024 },
  /** Below the runtime's own reserve (limits.ts) there is nothing to plan with. */
  memoryLimit: { ...BYTES, min: 64 * 1024 ** 2 },
  queueSize: { min: 1, max: 1_000_000 },
  maxAttempts: { min: 1, max: 20 },
  timeoutMs: TIMER,
  upstreamTimeoutMs: TIMER,
  headersTimeoutMs: TIMER,
  keepAliveTimeoutMs: TIMER,
  shutdownDelayMs: { ...TIMER, min: 0 },
  shutdownTimeoutMs: TIMER,
  revalidateAfter: { min: 1, max: 2_000_000 },
} satisfies Record<string, IntegerRange>

/** "an integer from 1 to 2147483647 (ms)": the rule of a range, as every message words it. */
export function describeRange(range: IntegerRange): string {
  return `an integer from ${range.min} to ${range.max}${range.unit ? ` (${range.unit})` : ''}`
}

/** The one start-up error of an option: its name, the rule it breaks, the value received. */
export function invalidOption(name: string, rule: string, received: unknown): ConfigError {
  return new ConfigError(`${name}: expected ${rule}, received ${JSON.stringify(String(received))}`)
}

/** A decimal integer within `range`, or the error naming `name`, the range and `raw`. */
export function parseInteger(name: string, raw: string, range: IntegerRange): number {
  const value = /^[0-9]+$/.test(raw) ? Number(raw) : NaN
  if (!(value >= range.min && value <= range.max)) throw invalidOption(name, describeRange(range), raw)
  return value
}

/** Checks the numeric fields of `SidecarOptions` given in code (the CLI checks its flags as it parses them). */
export function checkNumericOptions(options: SidecarOptions): void {
  for (const key of ['maximumRedirects', 'cacheMaxSize', 'cacheMaxEntrySize', 'hotCacheSize', 'concurrency', 'memoryLimit', 'queueSize', 'maxAttempts', 'timeoutMs', 'upstreamTimeoutMs', 'headersTimeoutMs', 'keepAliveTimeoutMs', 'revalidateAfter'] as const) {
    const value = options[key]
    const range: IntegerRange = RANGES[key]
    if (value !== undefined && !(Number.isInteger(value) && value >= range.min && value <= range.max)) throw invalidOption(key, describeRange(range), value)
  }
}
