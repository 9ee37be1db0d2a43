import type { NextFunction, Request, Response } from 'express'
import type { Logger } from 'pino'
import { canonicalSource, keyedHref, placeholderKey, type IgnoredParams } from '../cache/key.js'
import type { Producer, ResponseCache } from '../cache/response-cache.js'
import { PLACEHOLDER_TYPE } from '../cache/types.js'
import { hashBase64url } from '../next/etag.js'
import { isNotModified } from '../next/headers.js'
import { ImageError } from '../errors.js'
import type { ResolvedNextConfig } from '../next/images-config.js'
import { parseQuery, validateSource, type SourceParams } from '../next/validate.js'
import { makePlaceholder } from '../image/placeholder.js'
import type { Metrics } from '../runtime/metrics.js'
import type { WorkQueue } from '../runtime/queue.js'
import { traced, type TraceContext } from '../runtime/tracing.js'
import { produceFromSource, type FetchSource } from './source-fetch.js'
import { verifyPlaceholderSignature } from './signature.js'


export interface PlaceholderContext {
  config: ResolvedNextConfig
  cache: ResponseCache
  fetchSource: FetchSource
  queue: WorkQueue
  metrics: Metrics
  log: Logger
  maxAttempts: number
  signingKey?: string
  /** Query parameters of absolute sources left out of the cache key, as for images (--cache-key-ignore-params). */
  ignoreParams?: IgnoredParams
}

/**
 * `GET|HEAD /_sidecar/placeholder?url=`, top to bottom: signature → the optimizer's source checks →
 * cache lookup → (on a miss) fetch → size and blur → store → JSON (a StaticImageData) with the
 * optimizer's freshness, an ETag and 304.
 */
export function createPlaceholderHandler(ctx: PlaceholderContext) {
  const { config, log } = ctx
  const { images } = config

  function producer(params: SourceParams, trace: TraceContext | undefined): Producer {
    return produceFromSource(ctx, params, trace, async (upstream, _previous, signal) => {
      const result = await ctx.queue.transform(signal, (admit) =>
        traced(trace, 'placeholder', { 'image.source_bytes': upstream.buffer.byteLength }, async (span) => {
          const made = await makePlaceholder(upstream, params.href, { minimumCacheTTL: images.minimumCacheTTL, maxDeltaSeconds: config.profile.maxDeltaSeconds, dangerouslyAllowSVG: images.dangerouslyAllowSVG, sharp: config.sharp, major: config.profile.major }, admit)
          span?.setAttributes({ 'image.source_width': made.data.width, 'image.source_height': made.data.height, 'image.blur': made.data.blurDataURL !== undefined })
          return made
        }),
      )
      if (result.error) log.warn({ err: result.error, href: params.href }, 'sharp failed; the placeholder has the size without a blur')
      ctx.metrics.placeholders.inc({ blur: result.data.blurDataURL ? 'yes' : 'no' })
      const buffer = Buffer.from(JSON.stringify(result.data))
      return {
        buffer,
        contentType: PLACEHOLDER_TYPE,
        maxAge: result.maxAge,
        etag: hashBase64url(buffer),
        upstreamEtag: upstream.etag,
        // A fallback is fetched in full next time (a 304 would renew it for ever, see source-fetch.ts).
        validators: result.error ? undefined : upstream.validators,
      }
    })
  }

  return async function handlePlaceholder(req: Request, res: Response, next: NextFunction): Promise<void> {
    try {
      // As the optimizer: no route at all when Next would not optimize (nothing is fetched).
      if (images.unoptimized || images.loader !== 'default') throw new ImageError(404, 'Not Found')
      const queryStart = req.originalUrl.indexOf('?')
      const query = parseQuery(queryStart >= 0 ? req.originalUrl.slice(queryStart + 1) : '')
      if (ctx.signingKey) verifyPlaceholderSignature(ctx.signingKey, query)
      const params = validateSource(query, config)
      const trace = res.locals.trace as TraceContext | undefined
      const href = keyedHref(params.href, ctx.ignoreParams)
      const key = placeholderKey(href, config.profile.major)
      const { entry, result } = await ctx.cache.get(key, producer(params, trace), trace, { href: canonicalSource(href), width: 0, quality: 0, mimeType: PLACEHOLDER_TYPE })

      // The stored data has no `src`: each caller gets its own spelling back, never another's
      // (whose ignored parameters may be credentials), and an ETag of what it is sent.
      const body = Buffer.concat([Buffer.from(`{"src":${JSON.stringify(params.href)},`), entry.buffer.subarray(1)])
      const etag = `"${hashBase64url(entry.etag, params.href)}"`
      // Never immutable, even for static media: an entry made while sharp failed is kept only briefly.
      res.setHeader('Cache-Control', `public, max-age=${entry.maxAge}, must-revalidate`)
      res.setHeader('ETag', etag)
      if (isNotModified(req.headers, etag)) {
        res.status(304).end()
        return
      }
      res.setHeader('Content-Type', 'application/json; charset=utf-8')
      res.setHeader('X-Sidecar-Cache', result)
      res.setHeader('Content-Length', String(body.byteLength))
      res.status(200).end(req.method === 'HEAD' ? undefined : body)
    } catch (err) {
      next(err)
    }
  }
}
