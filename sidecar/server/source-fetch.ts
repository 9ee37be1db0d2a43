import type { ResolvedNextConfig } from '../next/images-config.js'
import { validateUrlParam, type SourceParams } from '../next/validate.js'
import type { CacheEntry } from '../cache/types.js'
import type { Produced, Producer } from '../cache/response-cache.js'
import type { Metrics } from '../runtime/metrics.js'
import type { SourceAdmission, WorkQueue } from '../runtime/queue.js'
import { traceHeaders, traced, type TraceContext } from '../runtime/tracing.js'
import { redactUrl } from '../runtime/credentials.js'
import { fetchExternal, type Resolver } from '../upstream/external.js'
import { fetchInternal } from '../upstream/frontend.js'
import type { NotModified, Upstream } from '../upstream/http.js'
import { withAttempts } from '../upstream/retry.js'

export interface SourceFetchContext {
  config: ResolvedNextConfig
  frontend: URL
  metrics: Metrics
  upstreamTimeoutMs: number
  resolve?: Resolver
}

/**
 * Validators for a conditional revalidation, only when the entry holds a product of the source (an
 * optimized image, a placeholder). An entry with the source's own bytes (sharp failed, or a
 * pass-through) is fetched again in full: a 304 would renew a sharp-failure fallback for ever, where
 * Next runs sharp again.
 */
export function conditionalValidators(previous: CacheEntry | undefined): CacheEntry['validators'] {
  return previous && previous.etag !== previous.upstreamEtag ? previous.validators : undefined
}

/**
 * Fetches a validated source by Next's upstream rules (the frontend for a relative one, the guarded
 * external fetch for an absolute one), conditionally when `previous` can be renewed, timed, counted
 * and traced. Shared by the optimizer and the placeholder endpoint, so both fetch alike.
 */
export function createSourceFetch(ctx: SourceFetchContext) {
  const { images } = ctx.config
  return async function fetchSource(params: SourceParams, signal: AbortSignal, previous: CacheEntry | undefined, admission: SourceAdmission, trace: TraceContext | undefined): Promise<Upstream | NotModified> {
    const kind = params.isAbsolute ? 'external' : 'internal'
    const fetchOnce = (fetchTrace: TraceContext | undefined) => {
      const common = { timeoutMs: ctx.upstreamTimeoutMs, maximumResponseBody: images.maximumResponseBody, signal, validators: conditionalValidators(previous), admitSource: admission, traceHeaders: traceHeaders(fetchTrace) }
      const { upstream } = ctx.config.profile
      const external = (href: string, maximumRedirects: number) =>
        fetchExternal(href, { ...common, dangerouslyAllowLocalIP: images.dangerouslyAllowLocalIP, maximumRedirects, fetchSemantics: upstream.fetch, resolve: ctx.resolve })
      // 16.5 follows the frontend's redirects, each Location checked as Next checks it (see frontend.ts).
      const redirects = upstream.followInternalRedirects
        ? { maximumRedirects: images.maximumRedirects, validate: (location: string) => validateUrlParam(location, ctx.config, true), external }
        : undefined
      return params.isAbsolute
        ? external(params.href, images.maximumRedirects)
        : fetchInternal(ctx.frontend, params.href, { ...common, checkStatus: upstream.checkInternalStatus, redirects })
    }
    const stopTimer = ctx.metrics.upstreamDuration.startTimer({ kind })
    try {
      const upstream = await traced(trace, 'upstream fetch', { 'next_image_sidecar.upstream': kind, 'url.full': redactUrl(params.href) }, async (span, fetchTrace) => {
        const answer = await fetchOnce(fetchTrace)
        span?.setAttribute('http.response.status_code', answer.status)
        return answer
      }, true)
      ctx.metrics.upstreamFetches.inc({ kind, outcome: upstream.notModified ? 'not_modified' : 'ok' })
      return upstream
    } catch (err) {
      ctx.metrics.upstreamFetches.inc({ kind, outcome: 'error' })
      throw err
    } finally {
      stopTimer()
    }
  }
}

export type FetchSource = ReturnType<typeof createSourceFetch>

export interface SourceJobContext {
  queue: WorkQueue
  fetchSource: FetchSource
  maxAttempts: number
}

/**
 * The producer of one cache entry made from a source, under the job's deadline: admitted by the
 * queue, the source fetched (conditionally when renewing `previous`) with retries; an unchanged
 * source renews `previous` as it is (beyond Next), else `make` turns the fresh answer into the entry.
 * The optimizer and the placeholder endpoint differ only in `make`.
 */
export function produceFromSource(
  ctx: SourceJobContext,
  params: SourceParams,
  trace: TraceContext | undefined,
  make: (upstream: Upstream, previous: CacheEntry | undefined, signal: AbortSignal) => Promise<Produced>,
): Producer {
  return (previous, signal) =>
    ctx.queue.job(signal, (admission) =>
      withAttempts(
        async () => {
          const upstream = await ctx.fetchSource(params, signal, previous, admission, trace)
          if (upstream.notModified) {
            const { expireAt: _expired, ...unchanged } = previous!
            return unchanged
          }
          return make(upstream, previous, signal)
        },
        { maxAttempts: ctx.maxAttempts, signal },
      ),
    )
}
