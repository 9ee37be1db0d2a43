/**
 * The one error type of the request path. It carries the HTTP status and the exact
 * body Next.js sends; `app.ts` turns it into a response in one place.
 */
export class ImageError extends Error {
  readonly statusCode: number
  /** Extra response headers (e.g. Retry-After on a 503). */
  readonly headers: Record<string, string>

  constructor(statusCode: number, message: string, options?: { cause?: unknown; headers?: Record<string, string> }) {
    super(message, options)
    this.name = 'ImageError'
    this.headers = options?.headers ?? {}
    // As Next's ImageError: anything below 400 (an upstream 3xx, 1xx) becomes 500.
    this.statusCode = statusCode >= 400 ? statusCode : 500
  }
}

/** Next's error bodies, word for word (next/src/server/image-optimizer.ts). */
export const MESSAGES = {
  upstreamInvalid: '"url" parameter is valid but upstream response is invalid',
  internalInvalid: '"url" parameter is valid but internal response is invalid',
  upstreamTimedOut: '"url" parameter is valid but upstream response timed out',
  notAllowed: '"url" parameter is not allowed',
  notAnImage: "The requested resource isn't a valid image.",
  typeNotAllowed: '"url" parameter is valid but image type is not allowed',
} as const

/** A configuration problem found at start: names the key, the rule and the value. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}
