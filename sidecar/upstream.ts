import { ADDRCONFIG, type LookupAddress } from 'node:dns'
import { lookup as dnsLookup } from 'node:dns/promises'
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { isIP, type LookupFunction } from 'node:net'
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream'
import { constants as zlib, createBrotliDecompress, createGunzip, createInflate, createInflateRaw } from 'node:zlib'
import { createHash } from 'node:crypto'
import { Deadline, untilAborted } from './deadline.js'
import { ImageError, MESSAGES } from './errors.js'
import { isPrivateIp } from './private-ip.js'
import type { UpstreamValidators } from './cache/types.js'
import type { SourceAdmission } from './queue.js'

/** What the transform needs from an upstream response. */
export interface Upstream {
  buffer: Buffer
  contentType: string | undefined
  cacheControl: string | undefined
  /** base64url of the upstream ETag header, else sha256 of the body (Next's `extractEtag`). */
  etag: string
  /** The raw ETag / Last-Modified, for the next conditional revalidation. */
  validators: UpstreamValidators
  /** The HTTP status the upstream answered (for traces). */
  status: number
  notModified?: false
}

/** The upstream confirmed (304) that the image has not changed since `validators`. */
export interface NotModified {
  notModified: true
  status: 304
  cacheControl: string | undefined
}

/** Resolves a hostname to every address a socket could connect to. Injectable for tests. */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>

export interface UpstreamOptions {
  /** Per-request timeout covering connect and body, ms (Next: 7000, not configurable there). */
  timeoutMs: number
  maximumResponseBody: number
  /** Caller's deadline (the job timeout); aborting it ends the fetch as a timeout. */
  signal?: AbortSignal
  /** Validators of a cached copy: the request becomes conditional and may answer NotModified. */
  validators?: UpstreamValidators
  /**
   * The queue's admission of a source body (see queue.ts). A body is read only once admitted;
   * when no slot is free the response is dropped, the wait happens outside the upstream timer
   * (under the job's deadline), and the fetch is made again holding the slot.
   */
  admitSource?: SourceAdmission
  /** Trace headers (`traceparent`) to send on, when the request is traced. */
  traceHeaders?: Record<string, string>
}

/** The body was not read: no source slot was free. The caller waits for one, then fetches again. */
class SourceDeferred extends Error {
  constructor() {
    super('no source slot free; the body was not read')
  }
}

function admitBody(res: IncomingMessage, options: UpstreamOptions): void {
  if (options.admitSource && !options.admitSource.tryAdmit()) {
    res.destroy()
    throw new SourceDeferred()
  }
}

/**
 * Runs `fetch` once; when it found no source slot, waits for one and runs it again. The wait is
 * for the sidecar's own capacity, so it is bounded by the job's deadline, never by an upstream
 * timer (a queue wait under Next's 7 s timeout refused bursts the pod would have finished), and
 * it holds no half-read upstream response meanwhile.
 */
async function withSourceSlot<T>(options: UpstreamOptions, fetch: () => Promise<T>): Promise<T> {
  try {
    return await fetch()
  } catch (err) {
    if (!(err instanceof SourceDeferred)) throw err
  }
  await options.admitSource!.wait()
  return fetch()
}

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

export interface InternalOptions extends UpstreamOptions {
  /** Next 16 refuses a non-2xx answer of the frontend; Next 15 hands its body to the image checks. */
  checkStatus?: boolean
}


/** Marks failures worth retrying: connection errors, timeouts, upstream 5xx. */
export class TransientUpstreamError extends ImageError {
  constructor(statusCode: number, message: string, options?: { cause?: unknown }) {
    super(statusCode, message, options)
    this.name = 'TransientUpstreamError'
  }
}

/**
 * A failure Next 15's `fetch()` reports as a plain error (the redirect limit, an unparsable
 * Location, too many content-codings, a body cut by the timeout), which Next answers with a bare 500.
 */
const fetchFailed = (reason: string, transient = false) => {
  const cause = new Error(`fetch failed: ${reason}`)
  return transient ? new TransientUpstreamError(500, 'Internal Server Error', { cause }) : new ImageError(500, 'Internal Server Error', { cause })
}

export function hashBase64url(...items: Array<string | Buffer>): string {
  const hash = createHash('sha256')
  for (const item of items) hash.update(item)
  return hash.digest('base64url')
}

export function extractEtag(etagHeader: string | undefined, body: Buffer): string {
  // base64url because a weak ETag (W/"...") must survive as a cache file name in Next.
  return etagHeader ? Buffer.from(etagHeader).toString('base64url') : hashBase64url(body)
}

// Agents are keyed by the pinned addresses (see getName) so a pooled socket is only reused
// for a host that resolved to the same, already checked, addresses.
type PinnedRequestOptions = RequestOptions & { pinKey?: string }
const agentOptions = { keepAlive: true, timeout: 7000 }
class PinnedHttpAgent extends HttpAgent {
  override getName(options: PinnedRequestOptions = {}): string {
    return `${super.getName(options)}:${options.pinKey ?? ''}`
  }
}
class PinnedHttpsAgent extends HttpsAgent {
  override getName(options: PinnedRequestOptions = {}): string {
    return `${super.getName(options)}:${options.pinKey ?? ''}`
  }
}
const agents = { http: new PinnedHttpAgent(agentOptions), https: new PinnedHttpsAgent(agentOptions) }

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

function request(url: URL, options: PinnedRequestOptions): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, options, resolve)
    req.on('error', reject)
    req.end()
  })
}

/** A request to `origin` with `path` as the request-target, verbatim. */
function requestTo(origin: URL, path: string, options: PinnedRequestOptions): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = (origin.protocol === 'https:' ? httpsRequest : httpRequest)({
      ...options,
      protocol: origin.protocol,
      hostname: origin.hostname.replace(/^\[|\]$/g, ''),
      port: origin.port || undefined,
      path,
    }, resolve)
    req.on('error', reject)
    req.end()
  })
}

/** zlib 'deflate' is ambiguous in the wild: zlib-wrapped or raw. Decide on the first byte. */
class DeflateDecoder extends Transform {
  private decoder: Transform | undefined
  override _transform(chunk: Buffer, encoding: BufferEncoding, callback: TransformCallback) {
    if (!this.decoder) {
      if (chunk.length === 0) return callback()
      const options = { flush: zlib.Z_SYNC_FLUSH, finishFlush: zlib.Z_SYNC_FLUSH }
      this.decoder = (chunk[0]! & 0x0f) === 0x08 ? createInflate(options) : createInflateRaw(options)
      this.decoder.on('data', (data: Buffer) => this.push(data))
      this.decoder.on('end', () => this.push(null))
      this.decoder.on('error', (err) => this.destroy(err))
    }
    this.decoder.write(chunk, encoding, callback)
  }
  override _final(callback: TransformCallback) {
    this.decoder?.end()
    this.decoder = undefined
    callback()
  }
}

const MAX_CONTENT_ENCODINGS = 5

/** Decodes Content-Encoding as Next does; an unknown coding leaves the body as it is. */
function decodeBody(res: IncomingMessage, invalidMessage: string, asFetch: boolean): Readable {
  const header = res.headers['content-encoding']
  if (!header) return res
  const codings = header.toLowerCase().split(',')
  if (codings.length > MAX_CONTENT_ENCODINGS) {
    throw asFetch ? fetchFailed(`${codings.length} content-codings`) : new ImageError(400, invalidMessage)
  }
  const decoders: Transform[] = []
  for (let i = codings.length - 1; i >= 0; i--) {
    switch (codings[i]!.trim()) {
      case 'x-gzip':
      case 'gzip':
        decoders.push(createGunzip({ flush: zlib.Z_SYNC_FLUSH, finishFlush: zlib.Z_SYNC_FLUSH }))
        break
      case 'deflate':
        decoders.push(new DeflateDecoder())
        break
      case 'br':
        decoders.push(createBrotliDecompress({ flush: zlib.BROTLI_OPERATION_FLUSH, finishFlush: zlib.BROTLI_OPERATION_FLUSH }))
        break
      default:
        return res
    }
  }
  pipeline([res, ...decoders], () => {})
  return decoders[decoders.length - 1]!
}

/** Reads a body, stopping (not buffering on) once it passes the byte limit. */
async function readBody(res: IncomingMessage, limit: number, invalidMessage: string, asFetch = false): Promise<Buffer> {
  const chunks: Buffer[] = []
  let total = 0
  try {
    for await (const chunk of decodeBody(res, invalidMessage, asFetch) as AsyncIterable<Buffer>) {
      total += chunk.byteLength
      if (total > limit) throw new ImageError(413, invalidMessage)
      chunks.push(chunk)
    }
  } finally {
    if (!res.complete) res.destroy()
  }
  return Buffer.concat(chunks, total)
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

const timedOut = (cause?: unknown) => new TransientUpstreamError(504, MESSAGES.upstreamTimedOut, { cause })

const isRedirect = (status: number) => [301, 302, 303, 307, 308].includes(status)

function conditionalHeaders(validators: UpstreamValidators | undefined): Record<string, string> {
  const headers: Record<string, string> = {}
  if (validators?.etag) headers['if-none-match'] = validators.etag
  if (validators?.lastModified) headers['if-modified-since'] = validators.lastModified
  return headers
}

const validatorsOf = (res: IncomingMessage): UpstreamValidators => ({
  ...(res.headers.etag ? { etag: res.headers.etag } : {}),
  ...(res.headers['last-modified'] ? { lastModified: res.headers['last-modified'] } : {}),
})

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
    if (signal.aborted) throw asFetch ? fetchFailed(`body of ${href} timed out`, true) : timedOut(err)
    throw err
  }
  // fetch() gives a 204/205 no body at all (Next 15: "upstream response is invalid"), while an empty
  // 200 body reaches the image checks (Next 15: "isn't a valid image").
  const noBody = !asFetch || status === 204 || status === 205
  if (buffer.byteLength === 0 && noBody) throw new ImageError(400, MESSAGES.upstreamInvalid, { cause: new Error(`empty body from ${href}`) })
  return {
    buffer,
    contentType: res.headers['content-type'],
    cacheControl: res.headers['cache-control'],
    etag: extractEtag(res.headers.etag, buffer),
    validators: validatorsOf(res),
    status,
  }
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
    return {
      buffer,
      contentType: res.headers['content-type'],
      cacheControl: res.headers['cache-control'],
      etag: extractEtag(res.headers.etag, buffer),
      validators: validatorsOf(res),
      status,
    }
  } catch (err) {
    if (err instanceof SourceDeferred) throw err
    if (signal.aborted) throw timedOut(err)
    if (err instanceof ImageError) throw err
    // Next answers any other failure of the internal fetch with a 500 and this message.
    throw new TransientUpstreamError(500, MESSAGES.upstreamInvalid, { cause: err })
  }
}
