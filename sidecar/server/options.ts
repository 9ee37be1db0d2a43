import type { Logger } from 'pino'
import { ConfigError } from '../errors.js'
import type { CacheStore } from '../cache/types.js'
import type { ClusterShare } from '../runtime/cluster.js'
import type { NextLine, NextMajor } from '../next/next-version.js'
import type { Resolver } from '../upstream/external.js'
import { MAX_TIMER_MS, OPTIONS, option, RANGES, type IntegerRange, type OptionKey, type TableFields } from './options-table.js'

/**
 * Options of `createSidecar`. Everything but `frontend` has a default. The fields a CLI flag or
 * variable sets are declared once in the options table (options-table.ts: type, range, default,
 * description; docs/configuration.md is generated from it); the few of richer types and the
 * programmatic ones are here.
 */
export type SidecarOptions = Omit<TableFields, 'frontend' | 'cache' | 'nextVersion'> & ProgrammaticOptions

/** The options of `createSidecar` that no flag sets, or that take more than a flag's text. */
export interface ProgrammaticOptions {
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
   * The Next.js line whose optimizer semantics apply: config defaults and schema, validation,
   * upstream rules (see README, Next.js versions): '16.5', '16.4' or '15.5', or a major for its
   * newest line (16 is 16.5, 15 is 15.5). Default 16. The CLI detects it from the `next` package
   * the config file resolves.
   */
  nextVersion?: NextMajor | NextLine
  /**
   * `sqlite://PATH` (default `sqlite://.cache/next-image-sidecar/cache.sqlite`), `memory://`,
   * `redis://HOST:PORT` / `rediss://…` (also Valkey), or a CacheStore of your own.
   */
  cache?: string | CacheStore
  /**
   * Serve `/metrics` on the image port too. Default true; the CLI sets it false with `--metrics-port`,
   * so an image origin exposed to the internet does not publish its metrics (see `listenOps`).
   */
  metricsOnMainPort?: boolean
  /** A pino logger; default: JSON to stdout at LOG_LEVEL (info). */
  logger?: Logger
  /** DNS resolution for absolute URLs; injectable for tests. Default: dns.lookup({ all: true }). */
  resolve?: Resolver
  /**
   * Set by the CLI in `--workers N` mode: this process is worker `index` of `count` sharing one
   * port. Single flight then goes through the cluster primary (or Redis), /metrics sums every
   * worker, the SQLite budget is split between the workers, and concurrency defaults to an
   * equal share of the cores.
   */
  clusterShare?: ClusterShare
  /**
   * Set by `purge` and `warm` on the store itself: this process maintains a store that a server owns.
   * Its bound is not the server's (a purge has no --cache-max-size; a warm may be given another), so
   * it evicts nothing by size: the serving processes keep the store within their bound.
   */
  cacheMaintenance?: boolean
}

export const DEFAULTS = {
  cache: OPTIONS.cache.default,
  queuePerSlot: 64,
  maxAttempts: OPTIONS.maxAttempts.default,
  timeoutMs: OPTIONS.timeoutMs.default,
  upstreamTimeoutMs: OPTIONS.upstreamTimeoutMs.default,
  headersTimeoutMs: OPTIONS.headersTimeoutMs.default,
  keepAliveTimeoutMs: OPTIONS.keepAliveTimeoutMs.default,
}

export { MAX_TIMER_MS, RANGES, type IntegerRange }

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

/** The numeric fields of `SidecarOptions`, from the table. */
const NUMERIC_FIELDS = (Object.keys(OPTIONS) as OptionKey[]).filter((key) => option(key).field && option(key).range) as Array<keyof SidecarOptions & keyof typeof RANGES>

/** Checks the numeric fields of `SidecarOptions` given in code (the CLI checks its flags as it parses them). */
export function checkNumericOptions(options: SidecarOptions): void {
  for (const key of NUMERIC_FIELDS) {
    const value = options[key] as unknown
    const range: IntegerRange = RANGES[key]
    if (value !== undefined && !(Number.isInteger(value) && (value as number) >= range.min && (value as number) <= range.max)) throw invalidOption(key, describeRange(range), value)
  }
}
