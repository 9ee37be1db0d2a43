import sharp from 'sharp'
import { ImageError, MESSAGES } from '../errors.js'
import { detectContentType, isAnimated } from './detect.js'
import { ANIMATABLE_TYPES, AVIF, BYPASS_TYPES, JPEG, PNG, WEBP } from '../next/image-types.js'
import type { SharpConfig } from '../next/images-config.js'
import { getMaxAge } from '../next/headers.js'
import { hashBase64url } from '../next/etag.js'
import { type Upstream } from '../upstream/http.js'
import { estimateWorkingSet } from './memory-estimate.js'
import type { AdmitMemory } from '../runtime/queue.js'

export interface TransformParams {
  href: string
  width: number
  quality: number
  /** The negotiated output type, or '' when the client named none of the configured formats. */
  mimeType: string
}

export interface TransformConfig {
  minimumCacheTTL: number
  /** The line's cap on an upstream max-age (NextProfile.maxDeltaSeconds). */
  maxDeltaSeconds?: number
  dangerouslyAllowSVG: boolean
  sharp: SharpConfig
}

export interface TransformResult {
  buffer: Buffer
  contentType: string
  /** Seconds the result stays fresh. */
  maxAge: number
  etag: string
  upstreamEtag: string
  /** Set when sharp failed and the original bytes are served instead. */
  error?: unknown
  /** Set when the source is animated and passed through as it is (Next warns about it). */
  animated?: true
}

/** A previous optimised output whose upstream has not changed (Next's revalidation shortcut). */
export interface PreviousOutput {
  buffer: Buffer
  maxAge?: number
  etag: string
  upstreamEtag: string
}

let configured = false
/**
 * Applies Next's process-wide sharp settings once: only the loaders Next unblocks
 * (so JP2, PDF, raw and friends are never decoded), the operation cache, and libvips' threads
 * per transform (Next's `imgOptConcurrency`, else `defaultThreads`, else half the cores).
 * Beyond Next, SVG's loader stays blocked too, whatever `dangerouslyAllowSVG` says: an SVG is served
 * as it is and sized by image-size, so librsvg is never needed, and libvips picks its loader by
 * sniffing (`<svg` in the first 300 ASCII bytes), so bytes detected as another format could
 * otherwise reach it (CVE-2026-64644's class; `BM<svg…` did, through the placeholder).
 */
export function configureSharp(config: SharpConfig, defaultThreads?: number): void {
  if (configured) return
  configured = true
  sharp.block({ operation: ['VipsForeignLoad'] })
  sharp.unblock({
    operation: [
      'VipsForeignLoadHeif',
      'VipsForeignLoadJpeg',
      'VipsForeignLoadNsgif',
      'VipsForeignLoadPng',
      'VipsForeignLoadTiff',
      'VipsForeignLoadWebp',
    ],
  })
  // libvips' operation cache only pays off for repeated identical operations, which the
  // response cache already absorbs; off by default so memory returns after a burst.
  sharp.cache(config.operationCache ?? false)
  if (config.concurrency) sharp.concurrency(config.concurrency)
  else if (defaultThreads) sharp.concurrency(defaultThreads)
  else if (sharp.concurrency() > 1) sharp.concurrency(Math.floor(Math.max(sharp.concurrency() / 2, 1)))
}

/**
 * Next's `optimizeImage`: auto-orient, resize without enlargement (or, given a height, to exactly
 * that box, as for a blur placeholder), Next's encoder settings.
 */
export async function optimizeImage(
  buffer: Buffer,
  contentType: string,
  width: number,
  quality: number,
  config: SharpConfig,
  height?: number,
): Promise<Buffer> {
  configureSharp(config)
  const pipeline = sharp(buffer, {
    limitInputPixels: config.maxInputPixels,
    sequentialRead: config.sequentialRead ?? undefined,
  })
    .timeout({ seconds: config.timeoutInSeconds })
    .rotate()
  if (height) pipeline.resize(width, height)
  else pipeline.resize(width, undefined, { withoutEnlargement: true })

  if (contentType === AVIF) {
    // Next scales quality so AVIF matches WebP visually (sharp defaults 80 vs 50).
    pipeline.avif({ quality: Math.max(Math.round(quality * (50 / 80)), 1), effort: 3 })
  } else if (contentType === WEBP) {
    pipeline.webp({ quality })
  } else if (contentType === PNG) {
    pipeline.png({ quality })
  } else if (contentType === JPEG) {
    pipeline.jpeg({ quality, mozjpeg: config.mozjpeg })
  }
  return pipeline.toBuffer()
}

/**
 * Next's `imageOptimizerTransform`, step by step: max-age → detect the type from the bytes →
 * refuse non-images and (unless allowed) SVG → pass animated and bypass types through →
 * choose the output type → reuse an unchanged previous output → (beyond Next: wait until its
 * estimated working set fits the memory budget, see queue.ts) → sharp → on any sharp error,
 * the original bytes.
 */
export async function transformImage(
  upstream: Upstream,
  params: TransformParams,
  config: TransformConfig,
  previousOutput?: PreviousOutput,
  admit?: AdmitMemory,
): Promise<TransformResult> {
  const { buffer: original, etag: upstreamEtag } = upstream
  const maxAge = Math.max(config.minimumCacheTTL, getMaxAge(upstream.cacheControl, config.maxDeltaSeconds))
  const upstreamType = detectContentType(original)

  if (!upstreamType || !upstreamType.startsWith('image/') || upstreamType.includes(',')) {
    throw new ImageError(400, MESSAGES.notAnImage, { cause: new Error(`${params.href} is ${upstreamType ?? 'of unknown type'}`) })
  }
  if (upstreamType.startsWith('image/svg') && !config.dangerouslyAllowSVG) {
    throw new ImageError(400, MESSAGES.typeNotAllowed, { cause: new Error(`${params.href} is SVG and dangerouslyAllowSVG is off`) })
  }
  if (ANIMATABLE_TYPES.includes(upstreamType) && isAnimated(original)) {
    return { buffer: original, contentType: upstreamType, maxAge, etag: upstreamEtag, upstreamEtag, animated: true }
  }
  if (BYPASS_TYPES.includes(upstreamType)) {
    return { buffer: original, contentType: upstreamType, maxAge, etag: upstreamEtag, upstreamEtag }
  }

  const contentType = params.mimeType || (upstreamType === WEBP || upstreamType === AVIF ? JPEG : upstreamType)

  if (previousOutput) {
    return {
      buffer: previousOutput.buffer,
      contentType,
      maxAge: previousOutput.maxAge || maxAge,
      etag: previousOutput.etag,
      upstreamEtag: previousOutput.upstreamEtag,
    }
  }

  if (admit) await admit(await workingSetOf(original, params.width, contentType, config.sharp))
  try {
    const buffer = await optimizeImage(original, contentType, params.width, params.quality, config.sharp)
    return { buffer, contentType, maxAge, etag: hashBase64url(buffer), upstreamEtag }
  } catch (error) {
    return { buffer: original, contentType: upstreamType, maxAge: config.minimumCacheTTL, etag: upstreamEtag, upstreamEtag, error }
  }
}

/** The estimated peak memory of optimizing `original`, from its header (nothing is decoded). */
export async function workingSetOf(original: Buffer, width: number, contentType: string, config: SharpConfig): Promise<number> {
  const header = await sharp(original).metadata().catch(() => undefined)
  // Unreadable, or past Next's pixel limit: sharp fails at once without decoding, as in Next.
  if (!header?.width || !header.height || header.width * header.height > config.maxInputPixels) return original.byteLength
  return estimateWorkingSet(
    {
      format: header.format ?? '',
      width: header.width,
      height: header.height,
      channels: header.channels ?? 3,
      depth: header.depth,
      orientation: header.orientation,
      isProgressive: header.isProgressive,
      chromaSubsampling: header.chromaSubsampling,
    },
    original.byteLength,
    width,
    contentType,
  )
}
