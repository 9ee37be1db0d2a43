import { imageSize } from 'image-size'
import sharp from 'sharp'
import { ImageError, MESSAGES } from '../errors.js'
import { blurSize, BLUR_QUALITY, displayedSize, hasBlur, type StaticImageData } from '../next/blur.js'
import { getMaxAge } from '../next/headers.js'
import type { SharpConfig } from '../next/images-config.js'
import type { NextMajor } from '../next/next-version.js'
import type { AdmitMemory } from '../runtime/queue.js'
import type { Upstream } from '../upstream/http.js'
import { detectContentType, isAnimated } from './detect.js'
import { optimizeImage, workingSetOf } from './transform.js'

export interface PlaceholderConfig {
  minimumCacheTTL: number
  dangerouslyAllowSVG: boolean
  sharp: SharpConfig
  major: NextMajor
}

export interface PlaceholderResult {
  data: StaticImageData
  /** Seconds the answer stays fresh. */
  maxAge: number
  /** Set when sharp failed: the answer then has the size without a blur. */
  error?: unknown
}

/**
 * What a static import of the source would evaluate to: its size as displayed and Next's blur
 * placeholder. The same refusals as the optimizer (not an image; SVG unless allowed), then Next's
 * build-time steps: the size from the header (image-size, as Next's `getImageSize`), and for a
 * still JPEG, PNG, WebP or AVIF an 8-pixel image at quality 70 in its own format (`getBlurImage`).
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
  const header = await headerSize(buffer)
  if (!header) throw new ImageError(400, MESSAGES.notAnImage, { cause: new Error(`${href} has no size in its header`) })
  const { width, height } = displayedSize(header.width, header.height, header.orientation)
  const data: StaticImageData = { src: href, height, width, blurWidth: 0, blurHeight: 0 }

  if (!hasBlur(type, config.major, sharp.versions.heif) || isAnimated(buffer)) return { data, maxAge }
  const { blurWidth, blurHeight } = blurSize(width, height)
  if (admit) await admit(await workingSetOf(buffer, blurWidth, type, config.sharp))
  try {
    // Next's build calls optimizeImage with its defaults, so mozjpeg whatever images.* says.
    const blur = await optimizeImage(buffer, type, blurWidth, BLUR_QUALITY, { ...config.sharp, mozjpeg: true }, blurHeight)
    return { data: { src: href, height, width, blurDataURL: `data:${type};base64,${blur.toString('base64')}`, blurWidth, blurHeight }, maxAge }
  } catch (error) {
    // As the optimizer's fallback: what can be answered is, for a short while.
    return { data, maxAge: config.minimumCacheTTL, error }
  }
}

/**
 * The size in the header, as Next's `getImageSize` reads it (image-size); beyond Next, what image-size
 * cannot read (an SVG whose root element starts after a long preamble) is asked of sharp, whose
 * metadata reads the header without decoding pixels. Undefined when neither can.
 */
async function headerSize(buffer: Buffer): Promise<{ width: number; height: number; orientation?: number } | undefined> {
  try {
    const { width, height, orientation } = imageSize(buffer)
    if (width && height) return { width, height, orientation }
  } catch {
    // Not readable by image-size: sharp may still be.
  }
  const metadata = await sharp(buffer).metadata().catch(() => undefined)
  return metadata?.width && metadata.height ? { width: metadata.width, height: metadata.height, orientation: metadata.orientation } : undefined
}
