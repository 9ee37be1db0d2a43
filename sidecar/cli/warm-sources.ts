import { readdirSync, realpathSync, statSync } from 'node:fs'
import { join, relative, sep } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { Parser } from 'htmlparser2'
import type { ResolvedNextConfig } from '../next/images-config.js'

/** One optimizer request to warm: the query parameters a live request carries. */
export interface WarmRequest {
  url: string
  w: string
  q: string
  /** The signature the page carried (see signature.ts), sent as found when warm has no key of its own. */
  s?: string
}

/**
 * The `url`, `w`, `q` (and `s`, when present) of an optimizer URL, absolute or relative, or
 * undefined if it is not one. Both spellings count: with `trailingSlash: true` Next's loader
 * emits `{basePath}/_next/image/?…`, and `next start` serves it directly.
 */
export function parseOptimizerUrl(raw: string, base: string, basePath: string): WarmRequest | undefined {
  let parsed: URL
  try {
    parsed = new URL(raw, base)
  } catch {
    return undefined
  }
  const imagePath = `${basePath}/_next/image`
  if (parsed.pathname !== imagePath && parsed.pathname !== `${imagePath}/`) return undefined
  const url = parsed.searchParams.get('url')
  const w = parsed.searchParams.get('w')
  const q = parsed.searchParams.get('q')
  const s = parsed.searchParams.get('s')
  if (!url || !w || !q) return undefined
  return s ? { url, w, q, s } : { url, w, q }
}

/** The candidate URLs of a srcset attribute (Next's URLs encode commas, so ", " splits them). */
export function srcsetUrls(srcset: string): string[] {
  return srcset
    .split(/,\s+/)
    .map((candidate) => candidate.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean)
}

/**
 * Every optimizer URL a browser may request from a rendered page: `<img src|srcset>`,
 * `<source srcset>`, and `<link rel=preload imagesrcset|href>`.
 */
export function imagesInHtml(html: string, pageUrl: string, basePath: string): WarmRequest[] {
  const found: string[] = []
  const parser = new Parser({
    onopentag(name, attrs) {
      if (name === 'img') {
        if (attrs.src) found.push(attrs.src)
        if (attrs.srcset) found.push(...srcsetUrls(attrs.srcset))
      } else if (name === 'source' && attrs.srcset) {
        found.push(...srcsetUrls(attrs.srcset))
      } else if (name === 'link' && attrs.rel?.split(/\s+/).includes('preload')) {
        if (attrs.imagesrcset) found.push(...srcsetUrls(attrs.imagesrcset))
        if (attrs.href) found.push(attrs.href)
      }
    },
  })
  parser.write(html)
  parser.end()
  return found.map((raw) => parseOptimizerUrl(raw, pageUrl, basePath)).filter((r): r is WarmRequest => r !== undefined)
}

/** What one sitemap file lists: pages (a `<urlset>`) or further sitemaps (a `<sitemapindex>`). */
export interface Sitemap {
  kind: 'urlset' | 'index'
  locs: string[]
}

/**
 * The `<loc>` entries of a sitemap or sitemap index (CDATA and entities decoded). Only a `<loc>`
 * directly inside `<url>` or `<sitemap>` counts: an image sitemap's `<image:loc>` is no page.
 */
export function parseSitemap(xml: string): Sitemap {
  const locs: string[] = []
  const stack: string[] = []
  let text: string | undefined
  const parser = new Parser(
    {
      onopentag(name) {
        if (name === 'loc' && (stack.at(-1) === 'url' || stack.at(-1) === 'sitemap')) text = ''
        stack.push(name)
      },
      ontext(chunk) {
        if (text !== undefined) text += chunk
      },
      onclosetag(name) {
        stack.pop()
        if (name === 'loc' && text !== undefined) {
          if (text.trim()) locs.push(text.trim())
          text = undefined
        }
      },
    },
    { xmlMode: true },
  )
  parser.write(xml)
  parser.end()
  return { kind: /<(?:\w+:)?sitemapindex[\s>]/.test(xml) ? 'index' : 'urlset', locs }
}

/**
 * A sitemap body as text. `sitemap.xml.gz` is usually served as a gzip file, not with
 * Content-Encoding, so the bytes arrive still packed: recognised by gzip's magic number and
 * unpacked, to at most `maxBytes` (the protocol's own limit is 50 MB unpacked).
 */
export function decodeSitemap(body: Buffer, maxBytes: number): string {
  if (body[0] !== 0x1f || body[1] !== 0x8b) return body.toString('utf8')
  try {
    return gunzipSync(body, { maxOutputLength: maxBytes }).toString('utf8')
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw new Error(`unpacks to larger than ${maxBytes} bytes`)
    throw new Error(`not a readable gzip file: ${(err as Error).message}`)
  }
}

const IMAGE_FILE = /\.(jpe?g|png|webp|avif|gif|tiff?|svg)$/i

/**
 * Whether `next/image` sends this source to the optimizer at all (Next's getImgProps, for the
 * default loader and the sidecar's): data: and blob: URLs never, SVGs (by the path's extension,
 * case-sensitive, query ignored) only with `images.dangerouslyAllowSVG`. A browser never asks the
 * optimizer for anything else, so warming it would only fail.
 */
export function isOptimizable(src: string, config: ResolvedNextConfig): boolean {
  if (!src || src.startsWith('data:') || src.startsWith('blob:')) return false
  return config.images.dangerouslyAllowSVG || !src.split('?', 1)[0]!.endsWith('.svg')
}

/**
 * Every file under `dir`, following symlinks. A link that cannot be followed (dangling, or a loop
 * the kernel refuses with ELOOP) and a directory already walked (a link back to an ancestor) are
 * reported to `onSkip` and left out, so one broken link in public/ does not end the run.
 */
function walk(dir: string, onSkip: (reason: string) => void, seen = new Set<string>()): string[] {
  let names: string[]
  try {
    const real = realpathSync(dir)
    if (seen.has(real)) {
      onSkip(`${dir}: a directory already walked (a symlink loop)`)
      return []
    }
    seen.add(real)
    names = readdirSync(dir)
  } catch {
    return []
  }
  return names.sort().flatMap((name) => {
    const path = join(dir, name)
    let isDirectory: boolean
    try {
      isDirectory = statSync(path).isDirectory()
    } catch (err) {
      onSkip(`${path}: ${(err as { code?: string }).code === 'ELOOP' ? 'a symlink loop' : `cannot be read (${(err as { code?: string }).code ?? (err as Error).message})`}`)
      return []
    }
    return isDirectory ? walk(path, onSkip, seen) : [path]
  })
}

/** Every width × quality of a source URL, as `next/image` may request them (none if it is never optimized). */
export function variantsOf(src: string, config: ResolvedNextConfig): WarmRequest[] {
  if (!isOptimizable(src, config)) return []
  const widths = [...new Set([...config.images.deviceSizes, ...config.images.imageSizes])].sort((a, b) => a - b)
  // Without `images.qualities` (Next 15) any quality is allowed; <Image> without a quality prop asks for 75.
  const qualities = config.images.qualities ?? [75]
  return widths.flatMap((w) => qualities.map((q) => ({ url: src, w: String(w), q: String(q) })))
}

/**
 * A Next project's images: public/ files and built static media, crossed with widths and
 * qualities. Links that cannot be followed are left out and reported to `onSkip`.
 */
export function projectImages(projectDir: string, config: ResolvedNextConfig, distDir = '.next', onSkip: (reason: string) => void = () => {}): WarmRequest[] {
  const { basePath } = config
  // As written in an app's <Image src>: not percent-encoded, so the cache keys match live requests.
  const toUrl = (root: string, file: string) => `/${relative(root, file).split(sep).join('/')}`
  const publicDir = join(projectDir, 'public')
  const mediaDir = join(projectDir, distDir, 'static/media')
  const sources = [
    ...walk(publicDir, onSkip).filter((f) => IMAGE_FILE.test(f)).map((f) => `${basePath}${toUrl(publicDir, f)}`),
    ...walk(mediaDir, onSkip).filter((f) => IMAGE_FILE.test(f)).map((f) => `${basePath}/_next/static/media${toUrl(mediaDir, f)}`),
  ]
  return sources.flatMap((src) => variantsOf(src, config))
}
