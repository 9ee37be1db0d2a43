import { readFile } from 'node:fs/promises'
import type { Server } from 'node:http'
import type { Sidecar } from '../server/app.js'
import { negotiableFormats, type ResolvedNextConfig } from '../next/images-config.js'
import { signImageParams, signPlaceholder } from '../server/signature.js'
import { decodeSitemap, imagesInHtml, parseOptimizerUrl, parseSitemap, projectImages, variantsOf, type WarmRequest } from './warm-sources.js'

export interface WarmSources {
  pages?: string[]
  sitemap?: string
  from?: string
  urls?: string
}

export interface WarmVariant {
  /** The path a browser requests, e.g. `/_next/image?url=%2Fa.jpg&w=640&q=75`. */
  path: string
  /** The Accept header that negotiates this variant's format. */
  accept: string
  format: string
}

export interface WarmFailure {
  variant: WarmVariant
  reason: string
}

/** One source's placeholder (`--placeholders`): the sidecar's `/_sidecar/placeholder` answer for it. */
export interface WarmPlaceholder {
  /** The source, exactly as the optimizer's `url` parameter (with basePath when the app has one). */
  source: string
  /** The path on the sidecar's main port (no basePath: the Next server calls it, not browsers). */
  path: string
}

export interface WarmPlaceholderFailure {
  placeholder: WarmPlaceholder
  reason: string
}

export interface WarmSummary {
  variants: number
  warmed: number
  skipped: number
  failed: WarmFailure[]
  bytesWritten: number
  elapsedMs: number
  /** Present when placeholders were asked for; counted apart, as they are not variants. */
  placeholders?: { total: number; warmed: number; skipped: number; failed: WarmPlaceholderFailure[] }
}

/** Bounds on what `warm` reads from pages and sitemaps, so a stalled or endless one cannot hold the run. */
export interface CollectOptions {
  /** One page or sitemap, headers and body, ms. Default 30000 (the CLI passes `--timeout`). */
  timeoutMs?: number
  /** Bytes of one page. Default 10 MiB. */
  maxPageBytes?: number
  /** Bytes of one sitemap, unpacked. Default 50 MiB, the sitemap protocol's own limit. */
  maxSitemapBytes?: number
  /** Where notes go (links skipped under public/). Default: stderr. */
  log?: (line: string) => void
}

export const WARM_LIMITS = {
  timeoutMs: 30_000,
  maxPageBytes: 10 * 1024 ** 2,
  maxSitemapBytes: 50 * 1024 ** 2,
  /** Sitemap indexes nest once by the protocol; a little slack, and no cycles. */
  maxSitemapDepth: 3,
  /** A variant request gets the job deadline plus this, so the sidecar's own 504 (with its reason) arrives first. */
  variantGraceMs: 5_000,
}

/** Why one page, sitemap or variant request gave up; its message is what the summary prints. */
export class WarmFetchError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'WarmFetchError'
  }
}

interface BoundedResponse {
  /** Where the answer came from, after redirects. */
  url: string
  status: number
  headers: Headers
  /** Bytes received (the body is kept only when `keepBody` says so). */
  bytes: number
  body: Buffer
}

/**
 * GET with a deadline over the whole exchange (headers and body) and a cap on the body: a stalled
 * or endless answer ends as a WarmFetchError instead of holding the run. Redirects are followed.
 */
async function boundedGet(
  url: string,
  init: { accept: string; timeoutMs: number; maxBytes: number; keepBody?: (status: number) => boolean },
): Promise<BoundedResponse> {
  const controller = new AbortController()
  // A plain timer on the controller, not AbortSignal.timeout (see README, deadlines).
  const timer = setTimeout(() => controller.abort(), init.timeoutMs)
  try {
    const res = await fetch(url, { headers: { accept: init.accept }, signal: controller.signal })
    const keep = init.keepBody?.(res.status) ?? true
    const declared = Number(res.headers.get('content-length') ?? NaN)
    if (declared > init.maxBytes) {
      controller.abort()
      throw new WarmFetchError(`larger than ${init.maxBytes} bytes (Content-Length ${declared})`)
    }
    const chunks: Buffer[] = []
    let bytes = 0
    if (res.body) {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        bytes += chunk.length
        if (bytes > init.maxBytes) {
          controller.abort()
          throw new WarmFetchError(`larger than ${init.maxBytes} bytes`)
        }
        if (keep) chunks.push(Buffer.from(chunk))
      }
    }
    return { url: res.url || url, status: res.status, headers: res.headers, bytes, body: Buffer.concat(chunks) }
  } catch (err) {
    if (err instanceof WarmFetchError) throw err
    if (controller.signal.aborted) throw new WarmFetchError(`no complete answer within ${init.timeoutMs} ms`)
    const cause = (err as { cause?: { code?: string; message?: string } }).cause
    throw new WarmFetchError(cause?.code ?? cause?.message ?? (err as Error).message)
  } finally {
    clearTimeout(timer)
  }
}

async function fetchSource(url: string, accept: string, timeoutMs: number, maxBytes: number): Promise<{ url: string; body: Buffer }> {
  const res = await boundedGet(url, { accept, timeoutMs, maxBytes })
  if (res.status < 200 || res.status > 299) throw new WarmFetchError(`answered ${res.status}`)
  return res
}

/**
 * The pages a sitemap lists, following sitemap indexes (next-sitemap writes one by default) to
 * their sitemaps, gzipped or not. A child that cannot be read is an error of its own; the rest count.
 */
async function sitemapPages(url: string, limits: Required<Omit<CollectOptions, 'log'>>, errors: string[], visited = new Set<string>(), depth = 0): Promise<string[]> {
  if (visited.has(url)) return []
  visited.add(url)
  let sitemap
  try {
    const { body } = await fetchSource(url, 'application/xml,text/xml;q=0.9,*/*;q=0.8', limits.timeoutMs, limits.maxSitemapBytes)
    sitemap = parseSitemap(decodeSitemap(body, limits.maxSitemapBytes))
  } catch (err) {
    errors.push(`sitemap ${url}: ${(err as Error).message}`)
    return []
  }
  const locs = sitemap.locs.map((loc) => onOriginOf(loc, url))
  if (sitemap.kind === 'urlset') return locs
  if (depth >= WARM_LIMITS.maxSitemapDepth) {
    errors.push(`sitemap ${url}: sitemap indexes nested deeper than ${WARM_LIMITS.maxSitemapDepth}`)
    return []
  }
  const pages: string[] = []
  for (const child of locs) pages.push(...(await sitemapPages(child, limits, errors, visited, depth + 1)))
  return pages
}

/**
 * A sitemap's `<loc>` on the origin the sitemap was read from: sitemaps name the public host
 * (next-sitemap, app/sitemap.ts), while warm reads the release it was pointed at — the live site
 * would give the old release's pages (other static media hashes), through the public internet.
 */
export function onOriginOf(loc: string, sitemapUrl: string): string {
  const target = new URL(loc, sitemapUrl)
  return new URL(`${target.pathname}${target.search}`, new URL(sitemapUrl).origin).href
}

/**
 * The optimizer requests the sources name, de-duplicated, in a stable order. A source that yields
 * no request at all is an error (a wrong URL, a sitemap format not understood, an unexpected
 * optimizer path): a warm run that did nothing must not look like one that did everything.
 */
export async function collectRequests(
  sources: WarmSources,
  config: ResolvedNextConfig,
  options: CollectOptions = {},
): Promise<{ requests: WarmRequest[]; errors: string[] }> {
  const limits = {
    timeoutMs: options.timeoutMs ?? WARM_LIMITS.timeoutMs,
    maxPageBytes: options.maxPageBytes ?? WARM_LIMITS.maxPageBytes,
    maxSitemapBytes: options.maxSitemapBytes ?? WARM_LIMITS.maxSitemapBytes,
  }
  const log = options.log ?? ((line: string) => void process.stderr.write(`warm: ${line}\n`))
  const requests: WarmRequest[] = []
  const errors: string[] = []
  const fromPages = async (pages: string[]): Promise<{ found: number; read: number }> => {
    let found = 0
    let read = 0
    for (const page of [...new Set(pages)]) {
      try {
        // A trailingSlash app redirects /a to /a/: relative URLs resolve against where the page came from.
        const { url, body } = await fetchSource(page, 'text/html,application/xhtml+xml;q=0.9,*/*;q=0.8', limits.timeoutMs, limits.maxPageBytes)
        const images = imagesInHtml(body.toString('utf8'), url, config.basePath)
        requests.push(...images)
        found += images.length
        read++
      } catch (err) {
        errors.push(`page ${page}: ${(err as Error).message}`)
      }
    }
    return { found, read }
  }
  const optimizerPath = `${config.basePath}/_next/image`
  if (sources.pages?.length) {
    const { found, read } = await fromPages(sources.pages)
    if (found === 0 && read > 0) errors.push(`--pages: no ${optimizerPath} URL in the ${read} page(s) read`)
  }
  if (sources.sitemap) {
    const pages = await sitemapPages(sources.sitemap, limits, errors)
    if (pages.length === 0) errors.push(`sitemap ${sources.sitemap}: lists no pages`)
    else {
      const { found, read } = await fromPages(pages)
      if (found === 0 && read > 0) errors.push(`sitemap ${sources.sitemap}: no ${optimizerPath} URL in the ${read} page(s) read`)
    }
  }
  if (sources.from) {
    const images = projectImages(sources.from, config, '.next', (reason) => log(`skipped ${reason}`))
    if (images.length === 0) errors.push(`--from ${sources.from}: no optimizable images in public/ or .next/static/media`)
    requests.push(...images)
  }
  if (sources.urls) {
    const lines = (await readFile(sources.urls, 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
    let found = 0
    for (const line of lines) {
      // A line is either an optimizer URL (warmed as it is) or an image (warmed at every width and quality).
      const parsed = line.includes('/_next/image') ? [parseOptimizerUrl(line, 'http://n', config.basePath)].filter((r): r is WarmRequest => !!r) : variantsOf(line, config)
      requests.push(...parsed)
      found += parsed.length
    }
    if (found === 0) errors.push(`--urls ${sources.urls}: no optimizer URL or optimizable image`)
  }
  const seen = new Set<string>()
  return {
    requests: requests.filter((r) => {
      const id = `${r.url}\n${r.w}\n${r.q}`
      return seen.has(id) ? false : (seen.add(id), true)
    }),
    errors,
  }
}

/**
 * Each request in every format the config can negotiate, plus the source-format fallback. The
 * path is `{basePath}/_next/image` (the sidecar serves it in every configuration, also for
 * trailingSlash apps). With signing on, each carries the signature the sidecar checks: computed
 * with `signingKey` when warm has it, else the one the page carried.
 */
export function planVariants(requests: WarmRequest[], config: ResolvedNextConfig, signingKey?: string): WarmVariant[] {
  // What the line negotiates (16.5's safe mode offers no AVIF: a browser never gets one to warm).
  const formats = [...negotiableFormats(config).map((f) => ({ format: f, accept: f })), { format: 'source', accept: '*/*' }]
  const imagePath = `${config.basePath}/_next/image`
  return requests.flatMap((r) => {
    const s = signingKey ? signImageParams(signingKey, r.url, r.w, r.q) : r.s
    const path = `${imagePath}?url=${encodeURIComponent(r.url)}&w=${r.w}&q=${r.q}${s ? `&s=${encodeURIComponent(s)}` : ''}`
    return formats.map(({ format, accept }) => ({ path, accept, format }))
  })
}

/**
 * One placeholder per distinct source among the requests, in their order. With signing on, each
 * carries its signature when warm has the key; a page's optimizer signature covers `w` and `q`
 * and cannot stand in for it, so without the key the sidecar will refuse them (reported then).
 */
export function planPlaceholders(requests: WarmRequest[], signingKey?: string): WarmPlaceholder[] {
  return [...new Set(requests.map((r) => r.url))].map((source) => {
    const s = signingKey ? `&s=${encodeURIComponent(signPlaceholder(signingKey, source))}` : ''
    return { source, path: `/_sidecar/placeholder?url=${encodeURIComponent(source)}${s}` }
  })
}

export interface WarmOptions {
  concurrency: number
  /** Placeholders to warm beside the variants, through the same workers, deadline and size cap. */
  placeholders?: WarmPlaceholder[]
  onProgress?: (done: number, total: number) => void
  /**
   * The image job deadline (`--timeout`), ms; default 30000. One variant request may take that plus
   * a grace, so the sidecar's own answer to a job past its deadline (with the reason) arrives first.
   */
  timeoutMs?: number
  /** Bytes of one variant's answer. Default: `images.maximumResponseBody` (50 MB), as no optimizer answer is larger. */
  maxBytes?: number
}

type WarmJob = { kind: 'variant'; variant: WarmVariant } | { kind: 'placeholder'; placeholder: WarmPlaceholder }

/**
 * Requests every variant (and placeholder) from a sidecar — this process's own (on a private
 * 127.0.0.1 port) or a running one (`origin`) — so warming takes the live code path, cache keys
 * and single flight. A fresh entry answers HIT and is skipped; a failure is recorded and the run goes on.
 */
export async function warmVariants(target: Sidecar | string, variants: WarmVariant[], options: WarmOptions): Promise<WarmSummary> {
  const started = Date.now()
  const server: (Server & { url: string }) | undefined = typeof target === 'string' ? undefined : await target.listen(0, '127.0.0.1')
  // `--target http://sidecar:3001/` and the variant's leading slash must not make `//_next/image`.
  const origin = server?.url ?? (target as string).replace(/\/+$/, '')
  const timeoutMs = (options.timeoutMs ?? WARM_LIMITS.timeoutMs) + WARM_LIMITS.variantGraceMs
  const maxBytes = options.maxBytes ?? (typeof target === 'string' ? 50_000_000 : target.config.images.maximumResponseBody)
  const summary: WarmSummary = { variants: variants.length, warmed: 0, skipped: 0, failed: [], bytesWritten: 0, elapsedMs: 0 }
  if (options.placeholders) summary.placeholders = { total: options.placeholders.length, warmed: 0, skipped: 0, failed: [] }
  const jobs: WarmJob[] = [
    ...variants.map((variant) => ({ kind: 'variant' as const, variant })),
    ...(options.placeholders ?? []).map((placeholder) => ({ kind: 'placeholder' as const, placeholder })),
  ]
  const runVariant = async (variant: WarmVariant) => {
    try {
      const res = await boundedGet(`${origin}${variant.path}`, { accept: variant.accept, timeoutMs, maxBytes, keepBody: (status) => status !== 200 })
      if (res.status !== 200) summary.failed.push({ variant, reason: `${res.status} ${res.body.toString('utf8').slice(0, 200)}` })
      else if (res.headers.get('x-nextjs-cache') === 'HIT') summary.skipped++
      else {
        summary.warmed++
        summary.bytesWritten += res.bytes
      }
    } catch (err) {
      summary.failed.push({ variant, reason: (err as Error).message })
    }
  }
  const runPlaceholder = async (placeholder: WarmPlaceholder) => {
    const tally = summary.placeholders!
    try {
      const res = await boundedGet(`${origin}${placeholder.path}`, { accept: 'application/json', timeoutMs, maxBytes, keepBody: (status) => status !== 200 })
      if (res.status !== 200) {
        const body = res.body.toString('utf8').slice(0, 200)
        // The one refusal warm can explain: it had no key, and a page's optimizer signature cannot be reused.
        const hint = res.status === 403 && !placeholder.path.includes('&s=') ? ' (placeholders are signed with IMAGE_SIDECAR_SIGNING_KEY, which warm does not have)' : ''
        tally.failed.push({ placeholder, reason: `${res.status} ${body}${hint}` })
      } else if (res.headers.get('x-sidecar-cache') === 'HIT') tally.skipped++
      else tally.warmed++
    } catch (err) {
      tally.failed.push({ placeholder, reason: (err as Error).message })
    }
  }
  let next = 0
  let done = 0
  try {
    await Promise.all(
      Array.from({ length: Math.max(1, options.concurrency) }, async () => {
        while (next < jobs.length) {
          const job = jobs[next++]!
          await (job.kind === 'variant' ? runVariant(job.variant) : runPlaceholder(job.placeholder))
          options.onProgress?.(++done, jobs.length)
        }
      }),
    )
    if (typeof target !== 'string') await target.idle()
  } finally {
    server?.close()
    server?.closeAllConnections()
  }
  summary.elapsedMs = Date.now() - started
  return summary
}

/** A progress line: a bar, rate and ETA on a terminal; a plain line every few seconds otherwise. */
export function progressReporter(stream: NodeJS.WriteStream, label = 'warm', unit = 'variants') {
  const started = Date.now()
  let lastLine = 0
  return (done: number, total: number) => {
    const elapsed = (Date.now() - started) / 1000
    const rate = done / Math.max(elapsed, 0.001)
    const eta = rate > 0 ? Math.round((total - done) / rate) : 0
    if (stream.isTTY) {
      const width = 30
      const filled = Math.round((done / total) * width)
      stream.write(`\r${label} [${'='.repeat(filled)}${' '.repeat(width - filled)}] ${done}/${total} ${rate.toFixed(1)}/s ETA ${eta}s `)
      if (done === total) stream.write('\n')
    } else if (Date.now() - lastLine > 2000 || done === total) {
      lastLine = Date.now()
      stream.write(`${label}: ${done}/${total} ${unit}, ${rate.toFixed(1)}/s, ETA ${eta}s\n`)
    }
  }
}
