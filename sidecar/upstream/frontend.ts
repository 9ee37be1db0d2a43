import { Deadline } from '../runtime/deadline.js'
import { ImageError, MESSAGES } from '../errors.js'
import { readBody } from './body.js'
import { admitBody, agents, conditionalHeaders, requestTo, SourceDeferred, timedOut, TransientUpstreamError, answerOf, withSourceSlot, type NotModified, type Upstream, type UpstreamOptions } from './http.js'

export interface InternalOptions extends UpstreamOptions {
  /** Next 16 refuses a non-2xx answer of the frontend; Next 15 hands its body to the image checks. */
  checkStatus?: boolean
}


/**
 * Fetches a relative image URL from the frontend, as Next's `fetchInternalImage` routes it
 * through itself: no client headers are forwarded, no redirect is followed, and failures
 * carry Next's "internal response" messages. The frontend is trusted (no private-IP guard).
 */
export function fetchInternal(frontend: URL, href: string, options: InternalOptions): Promise<Upstream | NotModified> {
  const target = frontendRequestTarget(href)
  return withSourceSlot(options, () => Deadline.run(options.timeoutMs, options.signal, (signal) => fetchFromFrontend(frontend, target, options, signal)))
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

async function fetchFromFrontend(frontend: URL, target: string, options: InternalOptions, signal: AbortSignal): Promise<Upstream | NotModified> {
  // Only the frontend's origin is ever connected to; the path is the href as written (see above).
  const url = new URL(frontend.origin)
  try {
    const res = await requestTo(url, target, {
      agent: url.protocol === 'https:' ? agents.https : agents.http,
      headers: { accept: '*/*', 'user-agent': 'next-image-sidecar', ...conditionalHeaders(options.validators), ...options.traceHeaders },
      signal,
    })
    const status = res.statusCode ?? 500
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
