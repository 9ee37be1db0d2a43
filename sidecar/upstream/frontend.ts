import { Deadline } from '../runtime/deadline.js'
import { ImageError, MESSAGES } from '../errors.js'
import { readBody } from './body.js'
import { admitBody, agents, conditionalHeaders, requestTo, SourceDeferred, timedOut, TransientUpstreamError, answerOf, withSourceSlot, type NotModified, type Upstream, type UpstreamOptions } from './http.js'

export interface InternalOptions extends UpstreamOptions {
  /** Next 16 refuses a non-2xx answer of the frontend; Next 15 hands its body to the image checks. */
  checkStatus?: boolean
  /** Set when the line follows the frontend's redirects (16.5); else a 3xx is an invalid response. */
  redirects?: InternalRedirects
}

/** How the frontend's redirects are followed (Next 16.5's `fetchInternalImage`). */
export interface InternalRedirects {
  /** `images.maximumRedirects`: hops followed, internal and external together. */
  maximumRedirects: number
  /** Next's `validateUrlParam(location, images, true)`: throws its 400, else the target. */
  validate(location: string): { href: string; isAbsolute: boolean }
  /** The guarded external fetch (private-IP guard, pinning) of an absolute target, with the hops left. */
  external(href: string, maximumRedirects: number): Promise<Upstream | NotModified>
}

// Next's `isRedirectStatus`, and the base its internal fetch parses a Location against.
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308])
const INTERNAL_IMAGE_BASE_URL = 'http://n'

/**
 * Fetches a relative image URL from the frontend, as Next's `fetchInternalImage` routes it
 * through itself: no client headers are forwarded, and failures carry Next's "internal response"
 * messages. The frontend is trusted (no private-IP guard).
 *
 * Redirects (16.5, `options.redirects`): a 3xx whose Location parses against Next's internal base
 * is followed within `maximumRedirects` hops (508 past them), each Location validated as Next
 * validates it (400 with its message). A relative target is requested from the frontend's origin
 * again, as written (never resolved against the frontend: see frontendRequestTarget), so a relative
 * hop reaches that origin only; an absolute one goes through the guarded external fetch with the
 * hops left, so the private-IP guard and DNS pinning hold for it as for an absolute source.
 */
export function fetchInternal(frontend: URL, href: string, options: InternalOptions): Promise<Upstream | NotModified> {
  return withSourceSlot(options, async () => {
    let current = href
    for (let hopsLeft = options.redirects?.maximumRedirects ?? 0; ; hopsLeft--) {
      const target = frontendRequestTarget(current)
      const hop = await Deadline.run(options.timeoutMs, options.signal, (signal) => fetchFromFrontend(frontend, target, options, signal))
      if (!('redirect' in hop)) return hop
      const redirects = options.redirects!
      if (hopsLeft === 0) throw new ImageError(508, MESSAGES.internalInvalid, { cause: new Error(`too many redirects from the frontend for ${href}`) })
      const next = redirects.validate(hop.redirect)
      if (!next.isAbsolute) {
        current = next.href
        continue
      }
      // Next returns its external fetch's promise from inside its try without awaiting it, so what
      // that throws (a refused connection too) escapes its internal 500 and reaches the caller as is.
      return redirects.external(next.href, hopsLeft - 1)
    }
  })
}

/**
 * The request-target a relative source is sent to the frontend with. The href is never parsed as
 * a URL against the frontend: WHATWG parsing reads `\` as `/` and drops tab, CR and LF, so
 * `/\evil/x.jpg` or `/<TAB>/evil/x.jpg` would resolve to another host. Instead the path goes to the
 * frontend's own origin as written, and the frontend routes it as Next's internal request would
 * (Next answers `\` and `//` with its 308 normalisation, an unknown path with 404). Only what an
 * HTTP request line cannot carry is percent-encoded (controls, space, non-ASCII), and the fragment
 * is dropped, as a browser would.
 */
export function frontendRequestTarget(href: string): string {
  if (!href.startsWith('/')) throw new Error(`a relative source must start with "/": ${JSON.stringify(href)}`)
  const hash = href.indexOf('#')
  const target = hash >= 0 ? href.slice(0, hash) : href
  return target.replace(/[\u0000-\u0020"<>`\u007f-\u{10ffff}]/gu, (c) => (c.codePointAt(0)! < 0x80 ? `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}` : encodeURIComponent(c)))
}

async function fetchFromFrontend(frontend: URL, target: string, options: InternalOptions, signal: AbortSignal): Promise<Upstream | NotModified | { redirect: string }> {
  // Only the frontend's origin is ever connected to; the path is the href as written (see above).
  const url = new URL(frontend.origin)
  try {
    const res = await requestTo(url, target, {
      agent: url.protocol === 'https:' ? agents.https : agents.http,
      headers: { accept: '*/*', 'user-agent': 'next-image-sidecar', ...conditionalHeaders(options.validators), ...options.traceHeaders },
      signal,
    })
    const status = res.statusCode ?? 500
    const location = res.headers.location
    if (options.redirects && REDIRECT_STATUSES.has(status) && location && URL.canParse(location, INTERNAL_IMAGE_BASE_URL)) {
      // A redirect body is never used.
      res.destroy()
      return { redirect: location }
    }
    if (status === 304 && options.validators) {
      res.destroy()
      return { notModified: true, status: 304, cacheControl: res.headers['cache-control'] }
    }
    if ((status < 200 || status > 299) && options.checkStatus !== false) {
      res.destroy()
      const cause = new Error(`frontend ${url.origin}${target} answered ${status}`)
      throw status >= 500 ? new TransientUpstreamError(status, MESSAGES.internalInvalid, { cause }) : new ImageError(status, MESSAGES.internalInvalid, { cause })
    }
    admitBody(res, options)
    const buffer = await readBody(res, options.maximumResponseBody, MESSAGES.internalInvalid)
    if (buffer.byteLength === 0) throw new ImageError(400, MESSAGES.internalInvalid, { cause: new Error(`empty body from ${url.origin}${target}`) })
    return answerOf(res, buffer, status)
  } catch (err) {
    if (err instanceof SourceDeferred) throw err
    if (signal.aborted) throw timedOut(err)
    if (err instanceof ImageError) throw err
    // Next answers any other failure of the internal fetch with a 500 and this message.
    throw new TransientUpstreamError(500, MESSAGES.upstreamInvalid, { cause: err })
  }
}
