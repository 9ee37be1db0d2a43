import { AVIF, JPEG, PNG, WEBP } from './image-types.js'

/** What the estimate needs from a source image's header (sharp's `metadata()`, which reads only the header). */
export interface SourceHeader {
  /** sharp's format name: jpeg, png, webp, heif, gif, tiff, svg, … */
  format: string
  width: number
  height: number
  channels: number
  /** 'uchar' (8 bits per sample) or wider. */
  depth?: string
  /** EXIF orientation; 5–8 swap width and height (and need the whole image decoded to rotate). */
  orientation?: number
}

const MiB = 1024 ** 2

/**
 * Bytes per output pixel and a fixed part, by output type: what the resize and the encoder hold,
 * an upper envelope of the peak RSS measured per transform with one libvips thread over the
 * corpus (`npm run bench:estimate` prints estimate vs observed; the README has the table).
 */
const ENCODER: Record<string, { fixed: number; perPixel: number }> = {
  [WEBP]: { fixed: 8 * MiB, perPixel: 12 },
  [JPEG]: { fixed: 8 * MiB, perPixel: 12 },
  [PNG]: { fixed: 20 * MiB, perPixel: 30 },
  [AVIF]: { fixed: 20 * MiB, perPixel: 42 },
}

/** Formats libvips decodes whole rather than line by line (so a job holds every decoded pixel at once). */
const WHOLE_DECODE = new Set(['webp', 'heif', 'gif', 'tiff'])

/**
 * The peak memory one transform will add, estimated from the source's header before anything is
 * decoded: the source bytes, the decoded pixels when the decoder or the rotation needs all of
 * them, and the resize and encoder buffers for the output size. Deliberately on the high side:
 * it decides what may run together within the memory budget.
 */
export function estimateWorkingSet(source: SourceHeader, sourceBytes: number, width: number, outputType: string): number {
  const rotated = (source.orientation ?? 1) >= 5
  const [srcWidth, srcHeight] = rotated ? [source.height, source.width] : [source.width, source.height]
  const outWidth = Math.min(width, srcWidth)
  const outPixels = outWidth * Math.max(Math.round((srcHeight * outWidth) / Math.max(srcWidth, 1)), 1)
  const bytesPerSample = source.depth && source.depth !== 'uchar' && source.depth !== 'char' ? 2 : 1

  let decoded = 0
  if (WHOLE_DECODE.has(source.format) || rotated) {
    // WebP decodes at a smaller scale when the output is at least halved (shrink-on-load).
    const shrink = source.format === 'webp' ? Math.max(Math.floor(srcWidth / outWidth), 1) : 1
    decoded = (source.width * source.height * source.channels * bytesPerSample) / (shrink * shrink)
  }
  const encoder = ENCODER[outputType] ?? ENCODER[JPEG]!
  // AVIF encodes alpha as a second image.
  const alpha = outputType === AVIF && source.channels === 4 ? 1.4 : 1
  return Math.round(sourceBytes + decoded + encoder.fixed + encoder.perPixel * alpha * outPixels)
}
