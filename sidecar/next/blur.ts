import { AVIF, JPEG, PNG, WEBP } from './image-types.js'
import type { NextMajor } from './next-version.js'

/**
 * Next's blur placeholder of a static import (next/src/build/webpack/loaders/next-image-loader/blur.ts):
 * the largest side shrunk to 8 pixels, quality 70, in the source's own format.
 */
export const BLUR_IMG_SIZE = 8
export const BLUR_QUALITY = 70

/** Pure: the blur image's size for a source of this (displayed) size, as Next computes it. */
export function blurSize(width: number, height: number): { blurWidth: number; blurHeight: number } {
  if (width >= height) return { blurWidth: BLUR_IMG_SIZE, blurHeight: Math.max(Math.round((height / width) * BLUR_IMG_SIZE), 1) }
  return { blurWidth: Math.max(Math.round((width / height) * BLUR_IMG_SIZE), 1), blurHeight: BLUR_IMG_SIZE }
}

/**
 * Pure: whether Next makes a blur of this (non-animated) type. Next 16 blurs JPEG, PNG, WebP and AVIF;
 * 15.5 blurs AVIF only when sharp's libheif decodes it safely (`canDecodeAvif`: 1.23.2 or later).
 */
export function hasBlur(contentType: string, major: NextMajor, heifVersion: string | undefined): boolean {
  if (contentType === JPEG || contentType === PNG || contentType === WEBP) return true
  if (contentType !== AVIF) return false
  return major >= 16 || isAvifDecodeSafe(heifVersion)
}

/** Next 15.5's `isAvifDecodeSafe`: libheif 1.23.2 or later; an unknown version is unsafe. */
export function isAvifDecodeSafe(heifVersion: string | undefined): boolean {
  const [major = NaN, minor = NaN, patch = NaN] = (heifVersion ?? '').split('.').map((part) => Number.parseInt(part, 10))
  if ([major, minor, patch].some(Number.isNaN)) return false
  return major > 1 || (major === 1 && minor > 23) || (major === 1 && minor === 23 && patch >= 2)
}

/**
 * Pure: the intrinsic size as a browser displays it. EXIF orientations 5–8 turn the image a quarter,
 * so width and height swap (`<Image>` renders with `image-orientation: from-image`). Next's static
 * import reports the stored size instead; see docs/placeholders.md.
 */
export function displayedSize(width: number, height: number, orientation: number | undefined): { width: number; height: number } {
  return orientation !== undefined && orientation >= 5 && orientation <= 8 ? { width: height, height: width } : { width, height }
}

/** What a static image import evaluates to (Next's `StaticImageData`), in Next's key order. */
export interface StaticImageData {
  src: string
  height: number
  width: number
  blurDataURL?: string
  blurWidth: number
  blurHeight: number
}
