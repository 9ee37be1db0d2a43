/** MIME types as Next names them (next/src/server/image-optimizer/image-type.ts). */
export const AVIF = 'image/avif'
export const WEBP = 'image/webp'
export const PNG = 'image/png'
export const JPEG = 'image/jpeg'
export const JXL = 'image/jxl'
export const JP2 = 'image/jp2'
export const HEIC = 'image/heic'
export const GIF = 'image/gif'
export const SVG = 'image/svg+xml'
export const ICO = 'image/x-icon'
export const ICNS = 'image/x-icns'
export const TIFF = 'image/tiff'
export const BMP = 'image/bmp'
export const PDF = 'application/pdf'

/** Types that may be animated; animated ones are passed through unmodified. */
export const ANIMATABLE_TYPES: readonly string[] = [WEBP, PNG, GIF]
/** Types Next never re-encodes. */
export const BYPASS_TYPES: readonly string[] = [SVG, ICO, ICNS, BMP, JXL, HEIC]

/**
 * Extension for a content type, as Next's `getExtension` (the `mime` package's first
 * extension) yields it for every type the optimizer can emit. Kept as a table because
 * these are the only types that reach it and `mime` would add a dependency for 13 rows.
 */
const EXTENSIONS: Record<string, string> = {
  [AVIF]: 'avif',
  [WEBP]: 'webp',
  [PNG]: 'png',
  [JPEG]: 'jpeg',
  [JXL]: 'jxl',
  [JP2]: 'jp2',
  [HEIC]: 'heic',
  [GIF]: 'gif',
  [SVG]: 'svg',
  [ICO]: 'ico',
  [ICNS]: 'icns',
  [TIFF]: 'tiff',
  [BMP]: 'bmp',
}

export function extensionOf(contentType: string): string | undefined {
  return EXTENSIONS[contentType]
}
