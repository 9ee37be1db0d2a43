import type { Logger } from 'pino'
import type { CacheStore } from './cache/types.js'
import type { Resolver } from './upstream.js'

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
  /** `sqlite://PATH` (default `sqlite://.cache/next-image-sidecar/cache.sqlite`), `memory://`, or a store. */
  cache?: string | CacheStore
  /** Attempts per image job; transient failures are retried with backoff. Default 3; 1 keeps Next's statuses. */
  maxAttempts?: number
  /** Deadline for one image job (all attempts), ms. Default 30000. */
  timeoutMs?: number
  /** Timeout of one upstream request, connect and body, ms. Default 7000 (Next's). */
  upstreamTimeoutMs?: number
  /** A pino logger; default: JSON to stdout at LOG_LEVEL (info). */
  logger?: Logger
  /** DNS resolution for absolute URLs; injectable for tests. Default: dns.lookup({ all: true }). */
  resolve?: Resolver
}

export const DEFAULTS = {
  cache: 'sqlite://.cache/next-image-sidecar/cache.sqlite',
  maxAttempts: 3,
  timeoutMs: 30_000,
  upstreamTimeoutMs: 7_000,
}
