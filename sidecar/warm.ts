import { readFile } from 'node:fs/promises'
import { request as httpRequest, type Server } from 'node:http'
import type { Sidecar } from './app.js'
import type { ResolvedNextConfig } from './images-config.js'
import { imagesInHtml, parseOptimizerUrl, projectImages, sitemapPages, variantsOf, type WarmRequest } from './warm-sources.js'

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

export interface WarmSummary {
  variants: number
  warmed: number
  skipped: number
  failed: WarmFailure[]
  bytesWritten: number
  elapsedMs: number
}

async function fetchText(url: string): Promise<string> {
  const res = await fetch(url, { headers: { accept: 'text/html,application/xml;q=0.9,*/*;q=0.8' } })
  if (!res.ok) throw new Error(`${url} answered ${res.status}`)
  return res.text()
}

/** The optimizer requests the sources name, de-duplicated, in a stable order. */
export async function collectRequests(sources: WarmSources, config: ResolvedNextConfig): Promise<{ requests: WarmRequest[]; errors: string[] }> {
  const requests: WarmRequest[] = []
  const errors: string[] = []
  const pages = [...(sources.pages ?? [])]
  if (sources.sitemap) {
    try {
      pages.push(...sitemapPages(await fetchText(sources.sitemap)))
    } catch (err) {
      errors.push(`sitemap ${sources.sitemap}: ${(err as Error).message}`)
    }
  }
  for (const page of pages) {
    try {
      requests.push(...imagesInHtml(await fetchText(page), page, config.basePath))
    } catch (err) {
      errors.push(`page ${page}: ${(err as Error).message}`)
    }
  }
  if (sources.from) requests.push(...projectImages(sources.from, config))
  if (sources.urls) {
    const lines = (await readFile(sources.urls, 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
    for (const line of lines) {
      // A line is either an optimizer URL (warmed as it is) or an image (warmed at every width and quality).
      requests.push(...(line.includes('/_next/image') ? [parseOptimizerUrl(line, 'http://n', config.basePath)].filter((r): r is WarmRequest => !!r) : variantsOf(line, config)))
    }
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

/** Each request in every format the config can negotiate, plus the source-format fallback. */
export function planVariants(requests: WarmRequest[], config: ResolvedNextConfig): WarmVariant[] {
  const formats = [...config.images.formats.map((f) => ({ format: f, accept: f })), { format: 'source', accept: '*/*' }]
  const imagePath = `${config.basePath}/_next/image`
  return requests.flatMap((r) => {
    const path = `${imagePath}?url=${encodeURIComponent(r.url)}&w=${r.w}&q=${r.q}`
    return formats.map(({ format, accept }) => ({ path, accept, format }))
  })
}

function get(origin: string, variant: WarmVariant): Promise<{ status: number; cache: string; bytes: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${origin}${variant.path}`, { headers: { accept: variant.accept } }, (res) => {
      const chunks: Buffer[] = []
      let bytes = 0
      res.on('data', (c: Buffer) => {
        bytes += c.length
        if (res.statusCode !== 200) chunks.push(c)
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, cache: String(res.headers['x-nextjs-cache'] ?? ''), bytes, body: Buffer.concat(chunks).toString() }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

export interface WarmOptions {
  concurrency: number
  onProgress?: (done: number, total: number) => void
}

/**
 * Requests every variant from a sidecar — this process's own (on a private 127.0.0.1 port)
 * or a running one (`origin`) — so warming takes the live code path, cache keys and single
 * flight. A fresh entry answers HIT and is skipped; a failure is recorded and the run goes on.
 */
export async function warmVariants(target: Sidecar | string, variants: WarmVariant[], options: WarmOptions): Promise<WarmSummary> {
  const started = Date.now()
  const server: (Server & { url: string }) | undefined = typeof target === 'string' ? undefined : await target.listen(0, '127.0.0.1')
  const origin = server?.url ?? (target as string)
  const summary: WarmSummary = { variants: variants.length, warmed: 0, skipped: 0, failed: [], bytesWritten: 0, elapsedMs: 0 }
  let next = 0
  let done = 0
  try {
    await Promise.all(
      Array.from({ length: Math.max(1, options.concurrency) }, async () => {
        while (next < variants.length) {
          const variant = variants[next++]!
          try {
            const res = await get(origin, variant)
            if (res.status !== 200) summary.failed.push({ variant, reason: `${res.status} ${res.body.slice(0, 200)}` })
            else if (res.cache === 'HIT') summary.skipped++
            else {
              summary.warmed++
              summary.bytesWritten += res.bytes
            }
          } catch (err) {
            summary.failed.push({ variant, reason: (err as Error).message })
          }
          options.onProgress?.(++done, variants.length)
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
export function progressReporter(stream: NodeJS.WriteStream, label = 'warm') {
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
      stream.write(`${label}: ${done}/${total} variants, ${rate.toFixed(1)}/s, ETA ${eta}s\n`)
    }
  }
}
