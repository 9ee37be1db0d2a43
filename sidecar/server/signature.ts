import { createHmac, timingSafeEqual } from 'node:crypto'
import { ImageError } from '../errors.js'
import type { Query } from '../next/validate.js'

/**
 * Optional signed URLs (off by default; Next has none): `s` = base64url(HMAC-SHA256(key,
 * url + "\n" + w + "\n" + q)) over the decoded parameter values, exactly as the loader computes it.
 */
export function signImageParams(key: string, url: string, w: string, q: string): string {
  return createHmac('sha256', key).update(`${url}\n${w}\n${q}`).digest('base64url')
}

const INVALID = '"s" parameter (signature) is invalid'

/** Rejects (403) a request whose signature is missing or wrong, before any other work. */
export function verifySignature(key: string, query: Query): void {
  const { url, w, q, s } = query
  if (typeof s !== 'string' || typeof url !== 'string' || typeof w !== 'string' || typeof q !== 'string') throw new ImageError(403, INVALID)
  const expected = Buffer.from(signImageParams(key, url, w, q))
  const given = Buffer.from(s)
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new ImageError(403, INVALID)
}

/**
 * The placeholder endpoint's signature: base64url(HMAC-SHA256(key, "placeholder\n" + url)). An image's
 * message starts with its url, never the bare word `placeholder` (not a valid url), so neither
 * signature stands for the other.
 */
export function signPlaceholder(key: string, url: string): string {
  return createHmac('sha256', key).update(`placeholder\n${url}`).digest('base64url')
}

/** Rejects (403) a placeholder request whose signature is missing or wrong. */
export function verifyPlaceholderSignature(key: string, query: Query): void {
  const { url, s } = query
  if (typeof s !== 'string' || typeof url !== 'string') throw new ImageError(403, INVALID)
  const expected = Buffer.from(signPlaceholder(key, url))
  const given = Buffer.from(s)
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new ImageError(403, INVALID)
}
