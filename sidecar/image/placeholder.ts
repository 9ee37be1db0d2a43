import { imageSize } from 'image-size'
import sharp from 'sharp'
import { ImageError, MESSAGES } from '../errors.js'
import { blurSize, BLUR_QUALITY, displayedSize, hasBlur, type StaticImageData } from '../next/blur.js'
import { ICO, SVG } from '../next/image-types.js'
import { getMaxAge } from '../next/headers.js'
import type { SharpConfig } from '../next/images-config.js'
import type { NextMajor } from '../next/next-version.js'
import type { AdmitMemory } from '../runtime/queue.js'
import type { Upstream } from '../upstream/http.js'
import { detectContentType, isAnimated } from './detect.js'
import { configureSharp, optimizeImage, workingSetOf } from './transform.js'

export interface PlaceholderConfig {
  minimumCacheTTL: number
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
  const maxAge = Math.max(config.minimumCacheTTL, getMaxAge(upstream.cacheControl))
  const type = detectContentType(buffer)
  if (!type || !type.startsWith('image/') || type.includes(',')) {
    throw new ImageError(400, MESSAGES.notAnImage, { cause: new Error(`${href} is ${type ?? 'of unknown type'}`) })
  }
  if (type.startsWith('image/svg') && !config.dangerouslyAllowSVG) {
    throw new ImageError(400, MESSAGES.typeNotAllowed, { cause: new Error(`${href} is SVG and dangerouslyAllowSVG is off`) })
  }
  // Loaders Next does not allow stay blocked before sharp reads anything.
  configureSharp(config.sharp)
  const size = await displayedSizeOf(buffer, type)
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

/**
 * The size a browser displays. For what sharp reads, its auto-oriented size: EXIF orientation of JPEG,
 * PNG and WebP, HEIF's rotation box, as the optimizer renders the source (Next's static import reports
 * the stored size; see docs/placeholders.md). Otherwise Next's `getImageSize` (image-size, which sizes
 * ICO, BMP and SVG; of an ICO, the first entry, as Next's older copy of image-size reads it); beyond
 * Next, an SVG image-size cannot size gets the size sharp reads. Undefined when nothing can.
 */
async function displayedSizeOf(buffer: Buffer, type: string): Promise<{ width: number; height: number } | undefined> {
  const metadata = await sharp(buffer).metadata().catch(() => undefined)
  if (type !== SVG && metadata?.autoOrient?.width && metadata.autoOrient.height) return { width: metadata.autoOrient.width, height: metadata.autoOrient.height }
  try {
    const header = imageSize(buffer)
    const first = type === ICO && header.images?.length ? header.images[0]! : header
    if (first.width && first.height) return displayedSize(first.width, first.height, header.orientation)
  } catch {
    // Not readable by image-size either: sharp's reading, if any.
  }
  return metadata?.width && metadata.height ? { width: metadata.width, height: metadata.height } : undefined
}
