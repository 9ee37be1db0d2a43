import { readdirSync, statSync } from 'node:fs'
import { join, relative, sep } from 'node:path'
import { Parser } from 'htmlparser2'
import type { ResolvedNextConfig } from './images-config.js'

/** One optimizer request to warm: the three query parameters, as a live request carries them. */
export interface WarmRequest {
  url: string
  w: string
  q: string
}

/** The `url`, `w`, `q` of an `/_next/image` URL (absolute or relative), or undefined if it is not one. */
export function parseOptimizerUrl(raw: string, base: string, basePath: string): WarmRequest | undefined {
  let parsed: URL
  try {
    parsed = new URL(raw, base)
  } catch {
    return undefined
  }
  if (parsed.pathname !== `${basePath}/_next/image`) return undefined
  const url = parsed.searchParams.get('url')
  const w = parsed.searchParams.get('w')
  const q = parsed.searchParams.get('q')
  return url && w && q ? { url, w, q } : undefined
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

/**
 * Page URLs listed in a sitemap. A regular expression rather than an XML parser: a sitemap's
 * `<loc>` elements are flat and entity-escaped, and nothing else in it matters here.
 */
export function sitemapPages(xml: string): string[] {
  const unescape = (s: string) => s.replace(/&amp;/g, '&').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'")
  return [...xml.matchAll(/<loc>\s*([^<]+?)\s*<\/loc>/g)].map((m) => unescape(m[1]!))
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

function walk(dir: string): string[] {
  let names: string[]
  try {
    names = readdirSync(dir)
  } catch {
    return []
  }
  return names.flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? walk(path) : [path]
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

/** A Next project's images: public/ files and built static media, crossed with widths and qualities. */
export function projectImages(projectDir: string, config: ResolvedNextConfig, distDir = '.next'): WarmRequest[] {
  const { basePath } = config
  // As written in an app's <Image src>: not percent-encoded, so the cache keys match live requests.
  const toUrl = (root: string, file: string) => `/${relative(root, file).split(sep).join('/')}`
  const publicDir = join(projectDir, 'public')
  const mediaDir = join(projectDir, distDir, 'static/media')
  const sources = [
    ...walk(publicDir).filter((f) => IMAGE_FILE.test(f)).map((f) => `${basePath}${toUrl(publicDir, f)}`),
    ...walk(mediaDir).filter((f) => IMAGE_FILE.test(f)).map((f) => `${basePath}/_next/static/media${toUrl(mediaDir, f)}`),
  ]
  return sources.flatMap((src) => variantsOf(src, config))
}
