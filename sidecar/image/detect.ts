import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import isAnimatedImage from 'is-animated'
import { AVIF, BMP, GIF, HEIC, ICNS, ICO, JP2, JPEG, JXL, PDF, PNG, SVG, TIFF, WEBP } from '../next/image-types.js'

const require = createRequire(import.meta.url)
// Next bundles image-size's `detector` for the formats its magic-byte table misses
// (big-endian TIFF, SVG after a preamble, ...). image-size does not export it, so we load
// the same file by path rather than hand-copy its 20 detectors.
const { detector } = require(join(dirname(require.resolve('image-size')), 'detector.js')) as {
  detector: (input: Uint8Array) => string | undefined
}

const startsWith = (buffer: Buffer, bytes: number[], offset = 0) => bytes.every((b, i) => buffer[offset + i] === b)

/** An ISOBMFF `ftyp` box with a sane size and the given major brand (AVIF, HEIC). */
function hasFtypBox(buffer: Buffer, brand: string): boolean {
  if (buffer.byteLength < 12) return false
  const boxSize = buffer.readUInt32BE(0)
  if (boxSize < 16 || boxSize > buffer.byteLength) return false
  return buffer.toString('latin1', 4, 8) === 'ftyp' && buffer.toString('latin1', 8, 12) === brand
}

const FALLBACK: Record<string, string | null> = {
  webp: WEBP,
  png: PNG,
  jpg: JPEG,
  gif: GIF,
  svg: SVG,
  jxl: JXL,
  'jxl-stream': JXL,
  jp2: JP2,
  tiff: TIFF,
  bmp: BMP,
  ico: ICO,
  icns: ICNS,
}

/**
 * The type of an upstream body from its bytes — never from its Content-Type header —
 * exactly as Next's `detectContentType` (server/image-optimizer/detect-content-type.ts).
 */
export function detectContentType(buffer: Buffer): string | null {
  if (buffer.byteLength === 0) return null
  if (startsWith(buffer, [0xff, 0xd8, 0xff])) return JPEG
  if (startsWith(buffer, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return PNG
  if (startsWith(buffer, [0x47, 0x49, 0x46, 0x38])) return GIF
  if (startsWith(buffer, [0x52, 0x49, 0x46, 0x46]) && startsWith(buffer, [0x57, 0x45, 0x42, 0x50], 8)) return WEBP
  if (startsWith(buffer, [0x3c, 0x3f, 0x78, 0x6d, 0x6c])) return SVG
  if (startsWith(buffer, [0x3c, 0x73, 0x76, 0x67])) return SVG
  if (hasFtypBox(buffer, 'avif')) return AVIF
  if (startsWith(buffer, [0x00, 0x00, 0x01, 0x00])) return ICO
  if (startsWith(buffer, [0x69, 0x63, 0x6e, 0x73])) return ICNS
  if (startsWith(buffer, [0x49, 0x49, 0x2a, 0x00])) return TIFF
  if (startsWith(buffer, [0x42, 0x4d])) return BMP
  if (startsWith(buffer, [0xff, 0x0a])) return JXL
  if (startsWith(buffer, [0x00, 0x00, 0x00, 0x0c, 0x4a, 0x58, 0x4c, 0x20, 0x0d, 0x0a, 0x87, 0x0a])) return JXL
  if (hasFtypBox(buffer, 'heic')) return HEIC
  if (startsWith(buffer, [0x25, 0x50, 0x44, 0x46, 0x2d])) return PDF
  if (startsWith(buffer, [0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20, 0x0d, 0x0a, 0x87, 0x0a])) return JP2
  let format: string | undefined
  try {
    format = detector(buffer.subarray(0, 1024))
  } catch {
    format = undefined
  }
  return (format && FALLBACK[format]) ?? null
}

/** Whether a GIF, PNG (APNG) or WebP has more than one frame. */
export function isAnimated(buffer: Buffer): boolean {
  try {
    return isAnimatedImage(buffer)
  } catch {
    return false
  }
}
