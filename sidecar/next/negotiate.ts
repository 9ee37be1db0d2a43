import { mediaType } from '@hapi/accept'
import { ImageError } from '../errors.js'

/**
 * The output type a client accepts, as Next picks it (`getSupportedMimeType`): @hapi/accept
 * ranks the configured formats (q-value, then alphabetically, so AVIF wins a tie), and the
 * winner only counts if the raw Accept header names it literally — `*\/*` or `image/*` yield ''.
 *
 * With no format to offer, 16.5 answers '' at once (`noFormatsNoType`); before it, @hapi/accept
 * returned the client's own first preference, which Next then encoded to when named literally.
 *
 * A malformed Accept header makes @hapi/accept throw; Next answers 500 there, we answer 400
 * (a documented deviation: it is the client's mistake).
 */
export function negotiateMimeType(formats: readonly string[], accept: string | undefined, noFormatsNoType = false): string {
  if (noFormatsNoType && formats.length === 0) return ''
  const header = accept ?? ''
  let type: string
  try {
    type = mediaType(header, [...formats])
  } catch {
    throw new ImageError(400, '"Accept" header is malformed')
  }
  return type && header.includes(type) ? type : ''
}
