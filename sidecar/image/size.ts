import { imageSize } from 'image-size'
import { SVG as svgSizer } from 'image-size/types/svg'
import { AVIF, BMP, GIF, HEIC, ICNS, ICO, JP2, JPEG, JXL, PNG, SVG, TIFF, WEBP } from '../next/image-types.js'

/** What a source's header says, before anything decodes it. */
export interface HeaderSize {
  width: number
  height: number
  /** EXIF orientation, where image-size reads it (JPEG). */
  orientation?: number
}

/**
 * Bytes of an SVG searched for its root element: the prolog before it (XML declaration, comments,
 * doctype) is short in real files, and a bounded window keeps a 50 MB document from being copied
 * into a string to be sized.
 */
export const SVG_SIZE_WINDOW = 64 * 1024

/** image-size's names for each type Next detects (of an ISOBMFF file, its major brand). */
const SIZER_FORMATS: Record<string, readonly string[]> = {
  [JPEG]: ['jpg'],
  [PNG]: ['png'],
  [GIF]: ['gif'],
  [WEBP]: ['webp'],
  [AVIF]: ['avif'],
  [HEIC]: ['heic'],
  [SVG]: ['svg'],
  [ICO]: ['ico'],
  [ICNS]: ['icns'],
  [TIFF]: ['tiff'],
  [BMP]: ['bmp'],
  [JXL]: ['jxl', 'jxl-stream'],
  [JP2]: ['jp2'],
}

/**
 * Thrown when the sizer recognises another format than the type detected from the first bytes: a
 * polyglot (`GIF8` before an SVG document) that is not the image it claims to be.
 */
export class FormatMismatch extends Error {
  constructor(
    readonly detected: string,
    readonly sized: string,
  ) {
    super(`detected as ${detected} but its header is ${sized}`)
    this.name = 'FormatMismatch'
  }
}

/**
 * Pure: whether libvips would take the bytes for an SVG document (svgload's sniff: the first 24
 * bytes ASCII and `<svg`, in any case, within the first 300). No real raster header passes it; a
 * polyglot made to pass another type's first-bytes check (`BM`, `icns`, `GIF8` before the document) does.
 */
export function sniffsAsSvg(buffer: Buffer): boolean {
  if (buffer.byteLength < 24) return false
  for (let i = 0; i < 24; i++) if (buffer[i]! >= 0x80) return false
  const at = buffer.toString('latin1', 0, 303).search(/<svg/i)
  return at >= 0 && at < 300 && at < buffer.byteLength - 5
}

/**
 * Pure: a source's size from its bytes as Next's `getImageSize` reads it (image-size, no decoder),
 * for a source already detected as `type` by `detectContentType`. Undefined when image-size cannot
 * read it; a `FormatMismatch` when it reads another format than `type`, or when a source not
 * detected as SVG is one to libvips.
 * - An ICO answers its first entry, as Next's older copy of image-size does (the newer one answers
 *   the largest).
 * - An SVG is sized by image-size's SVG reader alone (the root element's width, height and viewBox)
 *   within its first `SVG_SIZE_WINDOW` bytes, not image-size's 1000 (beyond Next: Inkscape's long
 *   root elements); never by librsvg, whose parse of the whole document costs seconds and hundreds
 *   of MB on a hostile file (CVE-2026-64644's class).
 */
export function headerSize(buffer: Buffer, type: string): HeaderSize | undefined {
  if (type === SVG) {
    const root = svgRootElement(buffer.subarray(0, SVG_SIZE_WINDOW).toString('utf8'))
    if (root === undefined) return undefined
    try {
      const { width, height } = svgSizer.calculate(Buffer.from(root))
      return width && height ? { width, height } : undefined
    } catch {
      return undefined
    }
  }
  if (sniffsAsSvg(buffer)) throw new FormatMismatch(type, 'svg')
  let header: ReturnType<typeof imageSize>
  try {
    header = imageSize(buffer)
  } catch {
    return undefined
  }
  if (!SIZER_FORMATS[type]?.includes(header.type ?? '')) throw new FormatMismatch(type, header.type ?? 'unknown')
  const first = type === ICO && header.images?.length ? header.images[0]! : header
  if (!first.width || !first.height) return undefined
  return header.orientation === undefined ? { width: first.width, height: first.height } : { width: first.width, height: first.height, orientation: header.orientation }
}

/**
 * Pure: the root element image-size's SVG reader takes — the leftmost match of its pattern
 * `/<svg\s([^>"']|"[^"]*"|'[^']*')*>/` — found in one pass. image-size runs that unanchored pattern
 * itself, and it backtracks from every `<svg ` that has no closing `>` (1.8 s for a 64 KiB window of
 * them, the event loop blocked); given the element alone, it matches at once. The pattern's tail is
 * deterministic (outside quotes, in "…", in '…'), so the scans of all starts fit in three states,
 * each keeping its smallest start: two scans in the same state at the same byte go on alike.
 */
export function svgRootElement(text: string): string | undefined {
  const NONE = Number.POSITIVE_INFINITY
  // The smallest start of a scan now outside quotes, inside "…", inside '…' (NONE: no such scan).
  let out = NONE
  let double = NONE
  let single = NONE
  let matchStart = NONE
  let matchEnd = -1
  for (let i = 0; i < text.length; i++) {
    // A scan starts after "<svg" and one white-space character, outside quotes.
    if (i >= 5 && text.charCodeAt(i - 5) === 0x3c && text.startsWith('svg', i - 4) && /\s/.test(text[i - 1]!)) out = Math.min(out, i - 5)
    const c = text.charCodeAt(i)
    let nextOut = NONE
    let nextDouble = NONE
    let nextSingle = NONE
    if (c === 0x3e /* > */) {
      if (out < matchStart) [matchStart, matchEnd] = [out, i]
    } else if (c === 0x22 /* " */) nextDouble = out
    else if (c === 0x27 /* ' */) nextSingle = out
    else nextOut = out
    if (c === 0x22) nextOut = Math.min(nextOut, double)
    else nextDouble = Math.min(nextDouble, double)
    if (c === 0x27) nextOut = Math.min(nextOut, single)
    else nextSingle = Math.min(nextSingle, single)
    ;[out, double, single] = [nextOut, nextDouble, nextSingle]
    // Done once no scan still running began before the match (later starts begin after it).
    if (matchEnd >= 0 && Math.min(out, double, single) > matchStart) break
  }
  return matchEnd >= 0 ? text.slice(matchStart, matchEnd + 1) : undefined
}
