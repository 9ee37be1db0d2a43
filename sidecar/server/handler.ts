import compressible from 'compressible'
import type { NextFunction, Request, RequestHandler, Response } from 'express'
import { imageSize } from 'image-size'
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { formOf } from '../cache/codec.js'
import { cacheKey, indexedHref, keyedHref, type IgnoredParams } from '../cache/key.js'
import type { ResponseCache, Producer, StoreRead } from '../cache/response-cache.js'
import type { CacheEntry } from '../cache/types.js'
import { ImageError } from '../errors.js'
import { imageResponseHeaders, isNotModified, type CacheResult } from '../next/headers.js'
import { negotiableFormats, type ResolvedNextConfig } from '../next/images-config.js'
import { negotiateMimeType } from '../next/negotiate.js'
import { verifySignature } from './signature.js'
import { redactUrl } from '../runtime/credentials.js'
import type { Metrics } from '../runtime/metrics.js'
import type { WorkQueue } from '../runtime/queue.js'
import { transformImage, type PreviousOutput } from '../image/transform.js'
import type { Upstream } from '../upstream/http.js'
import { traced, type TraceContext } from '../runtime/tracing.js'
import { produceFromSource, type FetchSource } from './source-fetch.js'
import { parseQuery, validateParams, type ImageParams } from '../next/validate.js'

/** Where the hit path leaves its read of the store (key and entry) on a request it hands to the full path. */
export const STORE_READ = Symbol('next-image-sidecar.store-read')

export interface HandlerContext {
  config: ResolvedNextConfig
  cache: ResponseCache
  /** Fetches a source by Next's upstream rules (shared with the placeholder handler). */
  fetchSource: FetchSource
  log: Logger
  maxAttempts: number
  queue: WorkQueue
  metrics: Metrics
  /** The compression middleware, for the compressible types (SVG, ICO, BMP) only. */
  compress?: RequestHandler
  /** When set, every request must carry a valid `s` signature (see signature.ts). */
  signingKey?: string
  /** Query parameters of absolute sources left out of the cache key (--cache-key-ignore-params). */
  ignoreParams?: IgnoredParams
}

/**
 * Next's revalidation shortcut (`getPreviouslyCachedImageOrNull`): when the upstream is
 * unchanged and the previous entry was really optimised, reuse its bytes without sharp.
 */
function reusableOutput(upstream: Upstream, previous: CacheEntry | undefined): PreviousOutput | undefined {
  if (previous && previous.upstreamEtag !== previous.etag && upstream.etag === previous.upstreamEtag) {
    return { buffer: previous.buffer, maxAge: previous.maxAge, etag: previous.etag, upstreamEtag: previous.upstreamEtag }
  }
  return undefined
}

/** The source's dimensions from its header, for a trace (nothing when it cannot be read). */
function sourceDimensions(buffer: Buffer): Record<string, number> {
  try {
    const { width, height } = imageSize(buffer)
    return width && height ? { 'image.source_width': width, 'image.source_height': height } : {}
  } catch {
    return {}
  }
}

/** What a query and an Accept header resolve to, before any I/O. */
export interface Plan {
  params: ImageParams
  mimeType: string
  key: string
}

/** Bytes of (query, Accept) pairs remembered, keys included, so hostile headers cannot grow it. */
const PLAN_MEMO_BYTES = 4 * 1024 * 1024

/**
 * `GET|HEAD {basePath}/_next/image?url=&w=&q=`, top to bottom:
 * parse → validate → negotiate → cache lookup → (on a miss) fetch → transform → store → respond.
 */
export function createImageHandler(ctx: HandlerContext) {
  const { config, log } = ctx
  const { images } = config
  const { fetchSource } = ctx

  /**
   * Signature check, validation, negotiation and the cache key are pure functions of the raw
   * query and the Accept header, so a repeated request reuses their result: on a warm cache
   * they were the largest share of our own CPU per request. Only successes are remembered.
   */
  const plans = new LRUCache<string, Plan>({
    maxSize: PLAN_MEMO_BYTES,
    sizeCalculation: (plan, memoKey) => 2 * (memoKey.length + plan.params.href.length + plan.key.length) + 200,
  })
  function planFor(rawQuery: string, accept: string | undefined): Plan {
    const memoKey = `${accept ?? ''}\n${rawQuery}`
    let plan = plans.get(memoKey)
    if (!plan) {
      const query = parseQuery(rawQuery)
      if (ctx.signingKey) verifySignature(ctx.signingKey, query)
      const params = validateParams(query, config)
      const mimeType = negotiateMimeType(negotiableFormats(config), accept, config.profile.noFormatsNoType)
      plan = { params, mimeType, key: cacheKey(keyedHref(params.href, ctx.ignoreParams), params.width, params.quality, mimeType, config.profile.major) }
      plans.set(memoKey, plan)
    }
    return plan
  }

  /**
   * Next's `warnOnce` for an animated source, word for word: operators search the log for it to
   * find images to mark `unoptimized`. Once per source (another width or quality of it is not
   * warned about again) and per process, remembered in a bounded set as Next's LRU does. The
   * href in the text is redacted as the `href` field is (a presigned URL's signature is a secret).
   */
  const warnedAnimated = new LRUCache<string, true>({ max: 10_000 })
  function warnAnimated(href: string): void {
    if (warnedAnimated.has(href)) return
    warnedAnimated.set(href, true)
    log.warn({ href }, `The requested resource "${redactUrl(href)}" is an animated image so it will not be optimized. Consider adding the "unoptimized" property to the <Image>.`)
  }

  /**
   * One image job under the job's deadline: admitted by the queue, fetch (conditionally, when
   * revalidating), then transform in a slot. Every wait in it ends when `signal` aborts.
   */
  function producer(params: ImageParams, mimeType: string, trace: TraceContext | undefined): Producer {
    return produceFromSource(ctx, params, trace, async (upstream, previous, signal) => {
      const result = await ctx.queue.transform(signal, (admit) =>
        traced(trace, 'transform', { 'image.width': params.width, 'image.quality': params.quality, 'image.source_bytes': upstream.buffer.byteLength }, async (span) => {
          const stopTimer = ctx.metrics.transformDuration.startTimer()
          try {
            const transformed = await transformImage(
              upstream,
              { href: params.href, width: params.width, quality: params.quality, mimeType },
              { minimumCacheTTL: images.minimumCacheTTL, maxDeltaSeconds: config.profile.maxDeltaSeconds, dangerouslyAllowSVG: images.dangerouslyAllowSVG, sharp: config.sharp },
              reusableOutput(upstream, previous),
              admit,
            )
            if (span) span.setAttributes({ ...sourceDimensions(upstream.buffer), 'image.format': transformed.contentType, 'image.bytes': transformed.buffer.byteLength, 'image.fallback': transformed.error !== undefined })
            return transformed
          } finally {
            stopTimer()
            ctx.metrics.transforms.inc()
          }
        }),
      )
      if (result.error) log.warn({ err: result.error, href: params.href }, 'sharp failed; serving the original bytes')
      if (result.animated) warnAnimated(params.href)
      const { buffer, contentType, maxAge, etag, upstreamEtag } = result
      return { buffer, contentType, maxAge, etag, upstreamEtag, validators: upstream.validators }
    })
  }

  /**
   * The response headers are a pure function of the entry (whose key fixes the href) and the
   * outcome; a hot entry is the same object on every hit, so its headers are computed once.
   */
  const headerMemo = new WeakMap<object, Map<string, Array<[string, string]>>>()
  function headersFor(entry: CacheEntry, params: ImageParams, result: CacheResult, notModified: boolean): Array<[string, string]> {
    // An entry read from a store shares its stored form's headers (formOf): computed once per form, not per read.
    const form = formOf(entry)
    let byOutcome = headerMemo.get(form)
    if (!byOutcome) headerMemo.set(form, (byOutcome = new Map()))
    const outcome = notModified ? '304' : result
    let headers = byOutcome.get(outcome)
    if (!headers) {
      headers = imageResponseHeaders(
        {
          href: params.href,
          isStatic: params.isStatic,
          contentType: entry.contentType,
          etag: entry.etag,
          maxAge: entry.maxAge,
          cacheResult: result,
          contentSecurityPolicy: images.contentSecurityPolicy,
          contentDispositionType: images.contentDispositionType,
          byteLength: entry.buffer.byteLength,
        },
        notModified,
      )
      byOutcome.set(outcome, headers)
    }
    return headers
  }

  async function handleImage(req: Request, res: Response, next: NextFunction): Promise<void> {
    try {
      // Next 404s the whole route when images are unoptimized or another loader is configured,
      // before looking at the query.
      if (images.unoptimized || images.loader !== 'default') throw new ImageError(404, 'Not Found')

      const queryStart = req.originalUrl.indexOf('?')
      const { params, mimeType, key } = planFor(queryStart >= 0 ? req.originalUrl.slice(queryStart + 1) : '', req.headers.accept)

      const trace = res.locals.trace as TraceContext | undefined
      const preread = (req as Request & { [STORE_READ]?: StoreRead & { key: string } })[STORE_READ]
      const { entry, result } = await ctx.cache.get(key, producer(params, mimeType, trace), trace, { href: indexedHref(params.href, ctx.ignoreParams), width: params.width, quality: params.quality, mimeType }, preread?.key === key ? preread : undefined)

      const notModified = isNotModified(req.headers, entry.etag)
      const headers = headersFor(entry, params, result, notModified)
      const send = () => {
        for (const [name, value] of headers) res.setHeader(name, value)
        // The head is written before the body: when `end(body)` writes it, Node (once it knows
        // the length) re-reads a Content-Disposition value as UTF-8 bytes, so a Latin-1 file
        // name (`äöü???í`) went out as fd fd fd 3f 3f 3f fd. Written first, the value goes out
        // as Latin-1 (e4 f6 fc … ed), as `next start` sends it; the hit path writes it first too.
        res.writeHead(notModified ? 304 : 200)
        if (notModified) res.end()
        else res.end(req.method === 'HEAD' ? undefined : entry.buffer)
      }
      // Like `next start`, gzip SVG, ICO and BMP for clients that accept it (and add
      // `Vary: Accept-Encoding`); already-compressed formats skip the middleware entirely.
      if (!notModified && ctx.compress && compressible(entry.contentType)) ctx.compress(req, res, send)
      else send()
    } catch (err) {
      next(err)
    }
  }
  // The hit path (hit-path.ts) answers from the same memoised plans and headers.
  return Object.assign(handleImage, { planFor, headersFor })
}

export type ImageHandler = ReturnType<typeof createImageHandler>
