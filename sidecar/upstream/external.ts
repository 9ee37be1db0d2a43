import { ADDRCONFIG, type LookupAddress } from 'node:dns'
import { lookup as dnsLookup } from 'node:dns/promises'
import type { IncomingMessage } from 'node:http'
import { isIP, type LookupFunction } from 'node:net'
import { Deadline, untilAborted } from '../runtime/deadline.js'
import { ImageError, MESSAGES } from '../errors.js'
import { isPrivateIp } from './private-ip.js'
import { readBody } from './body.js'
import { admitBody, agents, conditionalHeaders, fetchFailed, fetchTimedOut, request, timedOut, TransientUpstreamError, answerOf, withSourceSlot, type NotModified, type Upstream, type UpstreamOptions } from './http.js'

/** Resolves a hostname to every address a socket could connect to. Injectable for tests. */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>
export interface ExternalOptions extends UpstreamOptions {
  dangerouslyAllowLocalIP: boolean
  maximumRedirects: number
  /**
   * How the Next line fetches (see next-version.ts): 'per-hop' is Next 16's own redirect loop;
   * 'whatwg-fetch' is Next 15's `fetch()`, as it answers when the same things go wrong.
   */
  fetchSemantics?: 'per-hop' | 'whatwg-fetch'
  resolve?: Resolver
}

const BASE_HEADERS = { accept: '*/*', 'accept-language': '*', 'sec-fetch-mode': 'cors', 'user-agent': 'node' }
const HTTP_HEADERS = { ...BASE_HEADERS, 'accept-encoding': 'gzip, deflate' }
const HTTPS_HEADERS = { ...BASE_HEADERS, 'accept-encoding': 'br, gzip, deflate' }

const defaultResolver: Resolver = (hostname) =>
  dnsLookup(hostname, { all: true, hints: process.platform === 'win32' ? 0 : ADDRCONFIG })

/** A lookup that answers only with the addresses already checked: no second DNS query to rebind. */
export function createPinnedLookup(hostname: string, addresses: LookupAddress[]): LookupFunction {
  return (name, options, callback) => {
    if (name !== hostname) {
      callback(new Error(`lookup of "${name}" does not match pinned hostname "${hostname}"`), [])
      return
    }
    const family = typeof options.family === 'number' ? options.family : 0
    const matched = family ? addresses.filter((a) => a.family === family) : addresses
    if (matched.length === 0) {
      const err: NodeJS.ErrnoException = new Error(`No IPv${family} address available for ${hostname}`)
      err.code = 'ENODATA'
      callback(err, [])
      return
    }
    if (options.all) callback(null, matched)
    else callback(null, matched[0]!.address, matched[0]!.family)
  }
}

/**
 * The private-IP rule: every address a name resolved to must be public, not just the first one
 * (the connection may use any of them). Throws Next's 400 "not allowed".
 */
export function assertPublicAddresses(href: string, addresses: LookupAddress[]): void {
  const privateIps = addresses.map((a) => a.address).filter(isPrivateIp)
  if (privateIps.length > 0) {
    throw new ImageError(400, MESSAGES.notAllowed, {
      cause: new Error(`upstream image ${href} hostname resolved to private IP ${JSON.stringify(privateIps)}`),
    })
  }
}
const isRedirect = (status: number) => [301, 302, 303, 307, 308].includes(status)

/**
 * Fetches an absolute image URL as Next's `fetchExternalImage`: Next's request headers,
 * the private-IP guard on every hop with the connection pinned to the checked addresses,
 * at most `maximumRedirects` redirects (whose targets are not re-checked against
 * remotePatterns, as in Next), Content-Encoding decoding, the body limit and the timeout covering
 * DNS, connect, headers and body: per hop in Next 16 (its recursion gives each hop its own), over
 * the whole fetch in Next 15 (one `AbortSignal.timeout` on `fetch()`).
 */
export function fetchExternal(href: string, options: ExternalOptions): Promise<Upstream | NotModified> {
  const asFetch = options.fetchSemantics === 'whatwg-fetch'
  const follow = async (whole?: AbortSignal): Promise<Upstream | NotModified> => {
    let current = href
    for (let redirectsLeft = options.maximumRedirects; ; redirectsLeft--) {
      const hop = whole ? await fetchHop(current, options, whole) : await Deadline.run(options.timeoutMs, options.signal, (signal) => fetchHop(current, options, signal))
      if (!('redirect' in hop)) return hop
      if (redirectsLeft === 0) {
        throw asFetch ? fetchFailed(`redirect count exceeded for ${current}`) : new ImageError(508, MESSAGES.upstreamInvalid, { cause: new Error(`too many redirects for ${current}`) })
      }
      current = hop.redirect
    }
  }
  return withSourceSlot(options, () => (asFetch ? Deadline.run(options.timeoutMs, options.signal, follow) : follow()))
}

async function fetchHop(href: string, options: ExternalOptions, signal: AbortSignal): Promise<Upstream | NotModified | { redirect: string }> {
  const asFetch = options.fetchSemantics === 'whatwg-fetch'
  const url = new URL(href)
  const hostname = url.hostname.replace(/^\[|\]$/g, '')
  let lookup: LookupFunction | undefined
  let pinKey: string | undefined

  if (!options.dangerouslyAllowLocalIP) {
    const family = isIP(hostname)
    let addresses: LookupAddress[]
    if (family > 0) {
      addresses = [{ address: hostname, family }]
    } else {
      try {
        addresses = await untilAborted((options.resolve ?? defaultResolver)(hostname), signal)
      } catch (err) {
        if (signal.aborted) throw timedOut(err)
        throw err
      }
      lookup = createPinnedLookup(hostname, addresses)
    }
    pinKey = addresses.map((a) => `${a.family}:${a.address}`).join(',')
    assertPublicAddresses(href, addresses)
  }

  let res: IncomingMessage
  try {
    res = await request(url, {
      agent: url.protocol === 'https:' ? agents.https : agents.http,
      headers: { ...(url.protocol === 'https:' ? HTTPS_HEADERS : HTTP_HEADERS), ...conditionalHeaders(options.validators), ...options.traceHeaders },
      lookup,
      pinKey,
      signal,
    })
  } catch (err) {
    if (signal.aborted) throw timedOut(err)
    throw err
  }

  const status = res.statusCode ?? 500
  const location = res.headers.location
  if (isRedirect(status) && location && URL.canParse(location, href)) {
    // A redirect body is never used; draining it would download unbounded bytes.
    res.destroy()
    return { redirect: new URL(location, href).href }
  }
  if (isRedirect(status) && location && asFetch) {
    res.destroy()
    throw fetchFailed(`unparsable Location ${JSON.stringify(location)} from ${href}`)
  }
  if (status === 304 && options.validators) {
    res.destroy()
    return { notModified: true, status: 304, cacheControl: res.headers['cache-control'] }
  }
  if (status < 200 || status > 299) {
    res.destroy()
    const cause = new Error(`upstream ${href} answered ${status}`)
    throw status >= 500 ? new TransientUpstreamError(status, MESSAGES.upstreamInvalid, { cause }) : new ImageError(status, MESSAGES.upstreamInvalid, { cause })
  }

  admitBody(res, options)
  let buffer: Buffer
  try {
    buffer = await readBody(res, options.maximumResponseBody, MESSAGES.upstreamInvalid, asFetch)
  } catch (err) {
    // fetch() maps only a timeout before the response to Next 15's 504; one in the body escapes.
    if (signal.aborted) throw asFetch ? fetchTimedOut(`body of ${href} timed out`) : timedOut(err)
    throw err
  }
  // fetch() gives a 204/205 no body at all (Next 15: "upstream response is invalid"), while an empty
  // 200 body reaches the image checks (Next 15: "isn't a valid image").
  const noBody = !asFetch || status === 204 || status === 205
  if (buffer.byteLength === 0 && noBody) throw new ImageError(400, MESSAGES.upstreamInvalid, { cause: new Error(`empty body from ${href}`) })
  return answerOf(res, buffer, status)
}
