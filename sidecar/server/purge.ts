import { timingSafeEqual, createHash, randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import express, { type ErrorRequestHandler, type RequestHandler } from 'express'
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import { ConfigError, ImageError } from '../errors.js'
import type { ResponseCache } from '../cache/response-cache.js'
import { parsePurgeRequest, purgeResult, type PurgeRequest, type PurgeResult } from '../cache/purge-request.js'
import type { PurgeSelector, Variant } from '../cache/types.js'
import type { IgnoredParams } from '../cache/key.js'
import type { PurgeFeed } from '../cache/open-store.js'
import type { PurgeBroadcast } from '../runtime/coordinator.js'

export interface Purger {
  purge(request: PurgeRequest): Promise<PurgeResult>
}

/**
 * A purge everywhere the cache lives: the shared store and this process's hot tier (the
 * ResponseCache), then every other process that keeps copies of its own, through the broadcasts
 * (a cluster's primary, Redis pub/sub) and, on a SQLite file, the positions the processes on it
 * record; each of those also drops its hot copies when told. What a broadcast does not reach, the
 * purge log does: every process with a hot tier follows it (followFeed), so one cut off replays the
 * purges it missed when it can read the log again. The result says which processes confirmed
 * (`processes`) and which known ones did not in time (`missed`).
 */
export function createPurger({ cache, broadcasts, basePath, log, feed, ignore, candidates, silentMs = FEED_SILENT_MS }: { cache: ResponseCache; broadcasts: PurgeBroadcast[]; basePath: string; log: Logger; feed?: PurgeFeed; ignore?: IgnoredParams; candidates?: (sources: string[]) => Map<string, Variant> | undefined; /** FEED_SILENT_MS (a test shortens it). */ silentMs?: number }): Purger & { close(): Promise<void> } {
  const once = new AppliedOnce()
  // A broadcast is sent once the purge's deletes are done: its twin already applied from the log, the hot
  // copies go again all the same (a store read while the deletes ran may have put one back).
  for (const broadcast of broadcasts)
    broadcast.onPurge(async (selector) => void (once.first('broadcast', selector) ? await cache.purgeLocal(selector as PurgeSelector) : await cache.dropHot(selector as PurgeSelector)))
  const reader = randomUUID()
  const follower = feed?.hot ? followFeed(feed, cache, log, reader, once, silentMs) : undefined
  return {
    close: () => follower?.stop() ?? Promise.resolve(),
    async purge(request) {
      // Sources spelled as the app or a CMS writes them find what the request path stored.
      const selector = parsePurgeRequest(request, ignore)
      // Beyond the index, the keys each source may be stored under (up to MAX_CANDIDATE_SOURCES spellings: a
      // few hundred keys each); a larger purge relies on the index alone.
      const lookup = 'sources' in selector ? candidates?.(selector.sources) : undefined
      const removed = await cache.purge(selector, lookup)
      let processes = 0
      let missed = 0
      for (const broadcast of broadcasts) {
        const reach = await broadcast.announcePurge(selector)
        processes += reach.applied
        missed += reach.missed
      }
      if (feed?.readers) {
        // The processes on the file (other sidecars, and the workers the broadcast reached too): counted once each.
        const reach = await awaitReaders(feed.readers, follower ? reader : undefined, await feed.mark())
        processes = Math.max(processes, reach.applied)
        missed = Math.max(missed, reach.missed)
      }
      const result = purgeResult(removed, basePath, processes, missed)
      if (missed > 0) log.warn({ selector, processes, missed }, 'cache purged, but not every process with in-memory copies confirmed in time; they drop them when they next read the purge log')
      else log.info({ selector, removed: result.removed, urls: result.urls.length, processes }, 'cache purged')
      return result
    },
  }
}

/** How often a sidecar reads its store's purge log: the most a purge waits for the processes on a SQLite file. */
export const PURGE_FEED_MS = 1000
/** How long a purge waits for the other processes on a SQLite file to apply it (Redis: RedisCoordinator's ack wait). */
export const PURGE_READERS_MS = 3000
/**
 * A process that could not read the purge log for this long drops its whole hot tier: a purge stops
 * waiting for a process listed silent for 60 s (Redis) or 30 s (SQLite), and it then must hold nothing
 * older than that purge.
 */
export const FEED_SILENT_MS = 25_000
/** A process on a SQLite file says where it is at least this often, so purges count it as there. */
const READER_EVERY_MS = 10_000

/**
 * A purge reaches a process twice, by its broadcast and by the log: the second is skipped, as applying it
 * again would make the jobs of its sources that began after the first produce once more. Counted per
 * selector (the same source may be purged twice); an arrival waits for its twin ONCE_MS at most (a purge
 * made straight on a file has no broadcast), so a later purge of the same selector is never skipped for it.
 */
class AppliedOnce {
  private readonly pending = { broadcast: new Map<string, number[]>(), log: new Map<string, number[]>() }

  /** Whether this is the first of the two arrivals of `selector` through `path`. */
  first(path: 'broadcast' | 'log', selector: unknown): boolean {
    const key = JSON.stringify(selector)
    const now = Date.now()
    const other = this.pending[path === 'log' ? 'broadcast' : 'log']
    const waiting = (other.get(key) ?? []).filter((at) => now - at < ONCE_MS)
    if (waiting.length > 0) {
      waiting.shift()
      if (waiting.length === 0) other.delete(key)
      else other.set(key, waiting)
      return false
    }
    other.delete(key)
    const mine = this.pending[path]
    if (mine.size >= 1000) mine.clear()
    mine.set(key, [...(mine.get(key) ?? []).filter((at) => now - at < ONCE_MS), now])
    return true
  }
}

/** How long one arrival of a purge waits for its twin: the log is read every PURGE_FEED_MS. */
const ONCE_MS = 5000

/** Waits until the processes on the file seen lately have applied `mark`, for PURGE_READERS_MS at most. */
async function awaitReaders(readers: NonNullable<PurgeFeed['readers']>, self: string | undefined, mark: string): Promise<{ applied: number; missed: number }> {
  const first = await readers.behind(self, mark)
  let behind = first
  const until = Date.now() + PURGE_READERS_MS
  while (behind.behind > 0 && Date.now() < until) {
    await sleep(50)
    behind = await readers.behind(self, mark)
  }
  return { applied: first.live - behind.behind, missed: behind.behind }
}

/**
 * Purges logged in the store by other processes reach this hot tier within PURGE_FEED_MS, however they
 * were made (the CLI straight on the file, a replica whose pub/sub message this process never got): one
 * small read of the log per interval. After a spell without it (a partition, a hung Redis) the first
 * read replays everything missed; a log trimmed past this process's position, or FEED_SILENT_MS without
 * reading it, drops the whole hot tier.
 */
function followFeed(feed: PurgeFeed, cache: ResponseCache, log: Logger, reader: string, once: AppliedOnce, silentMs: number): { stop(): Promise<void> } {
  let mark: string | undefined
  let running: Promise<void> | undefined
  // Monotonic: a clock stepped back or forth must neither keep nor drop the hot tier.
  let lastRead = performance.now()
  let dropped = false
  let told: { mark: string; at: number } | undefined
  let first = true
  const poll = async () => {
    try {
      if (mark === undefined) {
        mark = await feed.mark()
        // Not on the first read: the hot tier may hold entries of purges made before this position.
        if (!first) await cache.purgeLocal({ all: true })
      } else {
        const next = await feed.after(mark)
        for (const selector of next.selectors) if (once.first('log', selector)) await cache.purgeLocal(selector)
        // A purge's deletes are done: what a store read put back into the hot tier meanwhile goes.
        for (const selector of next.completed) await cache.dropHot(selector)
        if (next.selectors.length > 0) log.debug({ from: mark, to: next.mark, selectors: next.selectors }, 'purges replayed from the purge log')
        mark = next.mark
      }
      lastRead = performance.now()
      if (dropped) {
        log.warn('purge log readable again: the hot tier is kept again')
        cache.keepHot(true)
      }
      dropped = false
      if (feed.readers && (told?.mark !== mark || Date.now() - told.at >= READER_EVERY_MS)) {
        await feed.readers.applied(reader, mark)
        told = { mark, at: Date.now() }
      }
    } catch (err) {
      first = false
      log.debug({ err }, 'purge log unreadable; the hot tier follows it again once it is')
      if (!dropped && performance.now() - lastRead >= silentMs) {
        dropped = true
        log.warn({ silentForMs: Math.round(performance.now() - lastRead) }, 'purge log unreadable: the hot tier is dropped and kept empty until it is readable again, as purges made meanwhile may not reach it')
        // Nothing is kept hot until the log is read again: a purge made once this process is no longer
        // listed as listening (60 s) neither waits for it nor reaches it, so no copy may outlive that point.
        cache.keepHot(false)
        await cache.purgeLocal({ all: true }).catch(() => undefined)
      }
    }
  }
  const timer = setInterval(() => {
    running ??= poll().finally(() => (running = undefined))
  }, PURGE_FEED_MS)
  timer.unref()
  running = poll().finally(() => (running = undefined))
  return {
    async stop() {
      clearInterval(timer)
      await running
      await feed.readers?.leave(reader).catch(() => undefined)
    },
  }
}

/** Constant time whatever the lengths: both sides hashed first. */
function sameToken(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest()
  return timingSafeEqual(digest(given), digest(expected))
}

/** The shortest admin token accepted at start: 32 bytes (256 bits if random) cannot be guessed over HTTP. */
export const MIN_ADMIN_TOKEN_BYTES = 32

/** A refused start: the admin token is shorter than MIN_ADMIN_TOKEN_BYTES (its value never shown). */
export function checkAdminToken(token: string): void {
  const bytes = Buffer.byteLength(token)
  if (bytes < MIN_ADMIN_TOKEN_BYTES) {
    throw new ConfigError(`--admin-token (IMAGE_SIDECAR_ADMIN_TOKEN): the admin token must be at least ${MIN_ADMIN_TOKEN_BYTES} bytes, received ${bytes} (e.g. openssl rand -hex 32)`)
  }
}

/** Pure: the credentials of an `Authorization: Bearer …` header; the scheme is case-insensitive (RFC 9110 §11.1). */
export function bearerToken(header: string | undefined): string {
  const match = /^bearer +(\S+) *$/i.exec(header ?? '')
  return match ? match[1]! : ''
}

/** Failed tokens an address may send before it must wait, and the longest wait. */
const FREE_FAILURES = 10
const MAX_BACKOFF_S = 60

/**
 * Back-off on repeated 401s, per remote address: after FREE_FAILURES wrong or missing tokens each
 * further attempt must wait 1, 2, 4 … 60 s (429 with Retry-After), the right token too, so a guess
 * that happens to be right is not told apart while throttled. A right token, in time, starts over.
 */
class AuthBackoff {
  private readonly failures = new LRUCache<string, { count: number; until: number }>({ max: 10_000 })

  /** Seconds the address must still wait, or 0. */
  waitFor(address: string): number {
    const entry = this.failures.get(address)
    const left = entry ? entry.until - Date.now() : 0
    return left > 0 ? Math.ceil(left / 1000) : 0
  }

  failed(address: string): void {
    const entry = this.failures.get(address) ?? { count: 0, until: 0 }
    entry.count++
    if (entry.count >= FREE_FAILURES) entry.until = Date.now() + Math.min(2 ** (entry.count - FREE_FAILURES), MAX_BACKOFF_S) * 1000
    this.failures.set(address, entry)
  }

  succeeded(address: string): void {
    this.failures.delete(address)
  }
}

/**
 * `POST /purge` with a JSON body ({"sources": [...]}, {"prefix": "..."} or {"all": true}) and
 * `Authorization: Bearer <admin token>`. Mounted only when a token is configured; every refusal
 * and every purge is logged and counted (next_image_sidecar_purge_requests_total{outcome}).
 */
export function purgeRoute({ purger, token, log, registry }: { purger: Purger; token: string; log: Logger; registry: Registry }): Array<RequestHandler | ErrorRequestHandler> {
  checkAdminToken(token)
  const requests = new Counter({
    name: 'next_image_sidecar_purge_requests_total',
    help: 'POST /purge requests by outcome: accepted, unauthorized, throttled (repeated 401s backing off), invalid, failed',
    labelNames: ['outcome'] as const,
    registers: [registry],
  })
  for (const outcome of ['accepted', 'unauthorized', 'throttled', 'invalid', 'failed']) requests.inc({ outcome }, 0)
  const backoff = new AuthBackoff()
  const authorize: RequestHandler = (req, res, next) => {
    const remote = req.socket.remoteAddress ?? ''
    const wait = backoff.waitFor(remote)
    if (wait > 0) {
      requests.inc({ outcome: 'throttled' })
      log.warn({ remote, retryAfter: wait }, 'purge refused: repeated wrong tokens, backing off')
      res.status(429).setHeader('Retry-After', String(wait)).type('text/plain').end('Too Many Requests')
      return
    }
    const given = bearerToken(req.headers.authorization)
    if (given === '' || !sameToken(given, token)) {
      backoff.failed(remote)
      requests.inc({ outcome: 'unauthorized' })
      log.warn({ remote, reason: given === '' ? 'no bearer token' : 'wrong token' }, 'purge refused')
      res.status(401).setHeader('WWW-Authenticate', 'Bearer').type('text/plain').end('Unauthorized')
      return
    }
    backoff.succeeded(remote)
    next()
  }
  const handle: RequestHandler = async (req, res) => {
    try {
      const result = await purger.purge(req.body as PurgeRequest)
      requests.inc({ outcome: 'accepted' })
      log.info({ remote: req.socket.remoteAddress, removed: result.removed }, 'purge accepted')
      res.status(200).json({ removed: result.removed, urls: result.urls, processes: result.processes, missed: result.missed })
    } catch (err) {
      const invalid = err instanceof ImageError && err.statusCode === 400
      requests.inc({ outcome: invalid ? 'invalid' : 'failed' })
      if (invalid) log.warn({ remote: req.socket.remoteAddress, reason: (err as Error).message }, 'purge refused')
      else log.error({ err }, 'purge failed')
      res.status(invalid ? 400 : 503).type('text/plain').end(invalid ? (err as Error).message : `purge failed: ${(err as Error).message}`)
    }
  }
  // A body that cannot be read (not JSON, an unsupported charset or encoding, too large) is an
  // invalid purge like any other: counted, logged, and answered in a line, not by the app's error page.
  const bodyRefused: ErrorRequestHandler = (err: { status?: number; type?: string; message?: string }, req, res, _next) => {
    const status = typeof err?.status === 'number' && err.status >= 400 && err.status < 500 ? err.status : 400
    const reason = err?.type === 'entity.too.large' ? 'larger than 1 MiB' : err?.type === 'entity.parse.failed' ? 'not JSON' : (err?.type ?? 'unreadable')
    requests.inc({ outcome: 'invalid' })
    log.warn({ remote: req.socket.remoteAddress, reason: `invalid body: ${reason}` }, 'purge refused')
    res.status(status).type('text/plain').end(`purge: the body is ${reason === 'not JSON' || reason === 'larger than 1 MiB' ? reason : `unreadable (${reason})`}`)
  }
  // After the token: an unauthenticated body is never parsed.
  return [authorize, express.json({ limit: '1mb', type: () => true }), bodyRefused, handle]
}
