import { timingSafeEqual, createHash } from 'node:crypto'
import express, { type RequestHandler } from 'express'
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import { ImageError } from '../errors.js'
import type { ResponseCache } from '../cache/response-cache.js'
import { parsePurgeRequest, purgeResult, type PurgeRequest, type PurgeResult } from '../cache/purge-request.js'
import type { PurgeSelector } from '../cache/types.js'
import type { PurgeFeed } from '../cache/open-store.js'
import type { PurgeBroadcast } from '../runtime/coordinator.js'

export interface Purger {
  purge(request: PurgeRequest): Promise<PurgeResult>
}

/**
 * A purge everywhere the cache lives: the shared store and this process's hot tier (the
 * ResponseCache), then every other process that keeps copies of its own, through the broadcasts
 * (a cluster's primary, Redis pub/sub); each of those also drops its hot copies when told.
 */
export function createPurger({ cache, broadcasts, basePath, log, feed }: { cache: ResponseCache; broadcasts: PurgeBroadcast[]; basePath: string; log: Logger; feed?: PurgeFeed }): Purger & { close(): void } {
  for (const broadcast of broadcasts) broadcast.onPurge(async (selector) => void (await cache.purgeLocal(selector as PurgeSelector)))
  const stopFollowing = feed ? followFeed(feed, cache, log) : () => {}
  return {
    close: stopFollowing,
    async purge(request) {
      const selector = parsePurgeRequest(request)
      const removed = await cache.purge(selector)
      let processes = 0
      for (const broadcast of broadcasts) processes += await broadcast.announcePurge(selector)
      const result = purgeResult(removed, basePath, processes)
      log.info({ selector, removed: result.removed, urls: result.urls.length, processes }, 'cache purged')
      return result
    },
  }
}

/** How often a sidecar reads its SQLite file's purge log: the most a direct `purge --cache sqlite://` waits for it. */
export const PURGE_FEED_MS = 1000

/**
 * Purges logged in the store by other processes (the CLI straight on the file) reach this hot tier
 * within PURGE_FEED_MS: one indexed read of the log per interval. Its own purges come back too,
 * harmlessly (the hot tier has nothing left of them).
 */
function followFeed(feed: PurgeFeed, cache: ResponseCache, log: Logger): () => void {
  let mark: string | undefined
  let running = false
  feed.mark().then((m) => void (mark ??= m), () => {})
  const timer = setInterval(async () => {
    if (running) return
    running = true
    try {
      if (mark === undefined) mark = await feed.mark()
      else {
        const next = await feed.after(mark)
        for (const selector of next.selectors) await cache.purgeLocal(selector)
        mark = next.mark
      }
    } catch (err) {
      log.debug({ err }, 'purge log unreadable; the hot tier follows it again once it is')
    } finally {
      running = false
    }
  }, PURGE_FEED_MS)
  timer.unref()
  return () => clearInterval(timer)
}

/** Constant time whatever the lengths: both sides hashed first. */
function sameToken(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest()
  return timingSafeEqual(digest(given), digest(expected))
}

/**
 * `POST /purge` with a JSON body ({"sources": [...]}, {"prefix": "..."} or {"all": true}) and
 * `Authorization: Bearer <admin token>`. Mounted only when a token is configured; every refusal
 * and every purge is logged and counted (next_image_sidecar_purge_requests_total{outcome}).
 */
export function purgeRoute({ purger, token, log, registry }: { purger: Purger; token: string; log: Logger; registry: Registry }): RequestHandler[] {
  const requests = new Counter({
    name: 'next_image_sidecar_purge_requests_total',
    help: 'POST /purge requests by outcome: accepted, unauthorized, invalid, failed',
    labelNames: ['outcome'] as const,
    registers: [registry],
  })
  for (const outcome of ['accepted', 'unauthorized', 'invalid', 'failed']) requests.inc({ outcome }, 0)
  const authorize: RequestHandler = (req, res, next) => {
    const header = req.headers.authorization ?? ''
    const given = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : ''
    if (given === '' || !sameToken(given, token)) {
      requests.inc({ outcome: 'unauthorized' })
      log.warn({ remote: req.socket.remoteAddress, reason: given === '' ? 'no bearer token' : 'wrong token' }, 'purge refused')
      res.status(401).setHeader('WWW-Authenticate', 'Bearer').type('text/plain').end('Unauthorized')
      return
    }
    next()
  }
  const handle: RequestHandler = async (req, res) => {
    try {
      const result = await purger.purge(req.body as PurgeRequest)
      requests.inc({ outcome: 'accepted' })
      log.info({ remote: req.socket.remoteAddress, removed: result.removed }, 'purge accepted')
      res.status(200).json({ removed: result.removed, urls: result.urls, processes: result.processes })
    } catch (err) {
      const invalid = err instanceof ImageError && err.statusCode === 400
      requests.inc({ outcome: invalid ? 'invalid' : 'failed' })
      if (!invalid) log.error({ err }, 'purge failed')
      res.status(invalid ? 400 : 503).type('text/plain').end(invalid ? (err as Error).message : `purge failed: ${(err as Error).message}`)
    }
  }
  // After the token: an unauthenticated body is never parsed.
  return [authorize, express.json({ limit: '1mb', type: () => true }), handle]
}
