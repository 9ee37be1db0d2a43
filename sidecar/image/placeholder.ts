import sharp from 'sharp'
import { ImageError, MESSAGES } from '../errors.js'
import { blurSize, BLUR_QUALITY, displayedSize, hasBlur, type StaticImageData } from '../next/blur.js'
import { AVIF, JPEG, PNG, WEBP } from '../next/image-types.js'
import { getMaxAge } from '../next/headers.js'
import type { SharpConfig } from '../next/images-config.js'
import type { NextMajor } from '../next/next-version.js'
import type { AdmitMemory } from '../runtime/queue.js'
import type { Upstream } from '../upstream/http.js'
import { detectContentType, isAnimated } from './detect.js'
import { FormatMismatch, headerSize, type HeaderSize } from './size.js'
import { configureSharp, optimizeImage, workingSetOf } from './transform.js'

export interface PlaceholderConfig {
  minimumCacheTTL: number
  /** The line's cap on an upstream max-age, as the optimizer's (NextProfile.maxDeltaSeconds). */
  maxDeltaSeconds?: number
  dangerouslyAllowSVG: boolean
  sharp: SharpConfig
  major: NextMajor
}

/**
 * A static import's data without its `src`: stored once per source, whatever the spelling each caller
 * used (with --cache-key-ignore-params, URLs differing in ignored parameters share it).
 */
export type PlaceholderData = Omit<StaticImageData, 'src'>

export interface PlaceholderResult {
  data: PlaceholderData
  /** Seconds the answer stays fresh. */
  maxAge: number
  /** Set when sharp failed: the answer then has the size without a blur. */
  error?: unknown
}

/**
 * What a static import of the source would evaluate to (its `src` aside): its size as displayed and
 * Next's blur placeholder. The same refusals as the optimizer (not an image; SVG unless allowed), then
 * Next's build-time steps: the size from the header, and for a still JPEG, PNG, WebP or AVIF an
 * 8-pixel image at quality 70 in its own format (`getBlurImage`).
 */
export async function makePlaceholder(upstream: Upstream, href: string, config: PlaceholderConfig, admit?: AdmitMemory): Promise<PlaceholderResult> {
  const { buffer } = upstream
  const maxAge = Math.max(config.minimumCacheTTL, getMaxAge(upstream.cacheControl, config.maxDeltaSeconds))
  const type = detectContentType(buffer)
  if (!type || !type.startsWith('image/') || type.includes(',')) {
    throw new ImageError(400, MESSAGES.notAnImage, { cause: new Error(`${href} is ${type ?? 'of unknown type'}`) })
  }
  if (type.startsWith('image/svg') && !config.dangerouslyAllowSVG) {
    throw new ImageError(400, MESSAGES.typeNotAllowed, { cause: new Error(`${href} is SVG and dangerouslyAllowSVG is off`) })
  }
  // Loaders Next does not allow (and SVG's) stay blocked before sharp reads anything.
  configureSharp(config.sharp)
  const size = await displayedSizeOf(buffer, type, href, config.sharp)
  if (!size) throw new ImageError(400, MESSAGES.notAnImage, { cause: new Error(`${href} has no size in its header`) })
  const { width, height } = size
  const data: PlaceholderData = { height, width, blurWidth: 0, blurHeight: 0 }

  if (!hasBlur(type, config.major, sharp.versions.heif) || isAnimated(buffer)) return { data, maxAge }
  const { blurWidth, blurHeight } = blurSize(width, height)
  if (admit) await admit(await workingSetOf(buffer, blurWidth, type, config.sharp))
  try {
    // Next's build calls optimizeImage with its defaults, so mozjpeg whatever images.* says.
    const blur = await optimizeImage(buffer, type, blurWidth, BLUR_QUALITY, { ...config.sharp, mozjpeg: true }, blurHeight)
    return { data: { height, width, blurDataURL: `data:${type};base64,${blur.toString('base64')}`, blurWidth, blurHeight }, maxAge }
  } catch (error) {
    // As the optimizer's fallback: what can be answered is, for a short while.
    return { data, maxAge: config.minimumCacheTTL, error }
  }
}

/** sharp's name of each type it decodes for a blur: what its header read must say of the same bytes. */
const DECODED_FORMATS: Record<string, string> = { [JPEG]: 'jpeg', [PNG]: 'png', [WEBP]: 'webp', [AVIF]: 'heif' }

/**
 * The size a browser displays, from the bytes as Next's `getImageSize` reads them (image-size, see
 * size.ts), refusing a source whose header is another format than its detected type (a polyglot:
 * `GIF8` before an SVG document passed for a GIF while sharp's GIF loader failed, and image-size
 * then sized the SVG). For JPEG, PNG, WebP and AVIF, the formats decoded for a blur, sharp's
 * auto-oriented size of the header instead (EXIF orientation of all four and HEIF's rotation box, as
 * the optimizer renders the source; image-size reads JPEG's only; Next's static import reports the
 * stored size, see docs/placeholders.md), with Next's pixel limit, used only when sharp read the same
 * format. Nothing else reaches sharp: an SVG is never parsed by librsvg here. Undefined when the
 * header gives no size.
 */
async function displayedSizeOf(buffer: Buffer, type: string, href: string, config: SharpConfig): Promise<{ width: number; height: number } | undefined> {
  let header: HeaderSize | undefined
  try {
    header = headerSize(buffer, type)
  } catch (error) {
    if (error instanceof FormatMismatch) throw new ImageError(400, MESSAGES.notAnImage, { cause: new Error(`${href} is ${error.message}`) })
    throw error
  }
  const decoded = DECODED_FORMATS[type]
  if (decoded) {
    const metadata = await sharp(buffer, { limitInputPixels: config.maxInputPixels }).metadata().catch(() => undefined)
    if (metadata?.format === decoded && metadata.autoOrient?.width && metadata.autoOrient.height) return { width: metadata.autoOrient.width, height: metadata.autoOrient.height }
  }
  return header && displayedSize(header.width, header.height, header.orientation)
}
