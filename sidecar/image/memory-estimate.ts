import { AVIF, JPEG, PNG, WEBP } from '../next/image-types.js'

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
  /** Progressive JPEG or interlaced PNG: neither decoder can stream (see below). */
  isProgressive?: boolean
  /** A JPEG's chroma subsampling as sharp reports it: '4:2:0', '4:4:4', '4:2:0:4' (CMYK), … */
  chromaSubsampling?: string
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
 * The DCT coefficients libjpeg keeps for a progressive JPEG: every scan refines all of them, so the
 * whole image's coefficients (2 bytes each) are held until the last scan, shrink-on-load or not.
 * Components per pixel follow the subsampling: 4:2:0 → 1 + 2 × ¼ = 1.5, 4:4:4 → 3, 4:2:0:4 (CMYK) → 2.5;
 * unknown → every channel at full size. Blocks are 8×8 within MCUs of up to 16×16, hence the rounding.
 * Measured at 6000×4000 4:2:0: 69 MiB beside a baseline file's 6 MiB (`npm run bench:estimate`).
 */
function jpegCoefficientBytes(source: SourceHeader): number {
  const parts = (source.chromaSubsampling ?? '').split(':').map(Number)
  let components = source.channels
  if (parts.length >= 3 && parts.every((n) => Number.isFinite(n) && n >= 0) && parts[0]! > 0) {
    const [j, a, b, extra] = parts as [number, number, number, number | undefined]
    const chroma = (a / j) * (b === 0 ? 0.5 : 1)
    components = source.channels === 1 ? 1 : 1 + 2 * chroma + (extra ? 1 : 0)
  }
  const mcu = (n: number) => Math.ceil(n / 16) * 16
  return 2 * components * mcu(source.width) * mcu(source.height)
}

/**
 * The peak memory one transform will add, estimated from the source's header before anything is
 * decoded: the source bytes, the decoded pixels when the decoder or the rotation needs all of
 * them, a progressive JPEG's coefficient buffer, and the resize and encoder buffers for the output size. Deliberately on the high side:
 * it decides what may run together within the memory budget.
 */
export function estimateWorkingSet(source: SourceHeader, sourceBytes: number, width: number, outputType: string): number {
  const rotated = (source.orientation ?? 1) >= 5
  const [srcWidth, srcHeight] = rotated ? [source.height, source.width] : [source.width, source.height]
  const outWidth = Math.min(width, srcWidth)
  const outPixels = outWidth * Math.max(Math.round((srcHeight * outWidth) / Math.max(srcWidth, 1)), 1)
  const bytesPerSample = source.depth && source.depth !== 'uchar' && source.depth !== 'char' ? 2 : 1

  // An interlaced PNG has no row complete before the last pass: libvips decodes it whole.
  const interlacedPng = source.format === 'png' && source.isProgressive === true
  let decoded = 0
  if (WHOLE_DECODE.has(source.format) || rotated || interlacedPng) {
    // WebP decodes at a smaller scale when the output is at least halved (shrink-on-load).
    const shrink = source.format === 'webp' ? Math.max(Math.floor(srcWidth / outWidth), 1) : 1
    decoded = (source.width * source.height * source.channels * bytesPerSample) / (shrink * shrink)
  }
  const coefficients = source.format === 'jpeg' && source.isProgressive === true ? jpegCoefficientBytes(source) : 0
  const encoder = ENCODER[outputType] ?? ENCODER[JPEG]!
  // AVIF encodes alpha as a second image.
  const alpha = outputType === AVIF && source.channels === 4 ? 1.4 : 1
  return Math.round(sourceBytes + decoded + coefficients + encoder.fixed + encoder.perPixel * alpha * outPixels)
}
