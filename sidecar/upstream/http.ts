import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { ImageError, MESSAGES } from '../errors.js'
import { extractEtag } from '../next/etag.js'
import type { SourceAdmission } from '../runtime/queue.js'

/** What every upstream fetch shares: its answer, its options, the agents and the source slot. */

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


/** The upstream's own validators, kept for the next conditional revalidation. */
export interface UpstreamValidators {
  etag?: string
  lastModified?: string
}

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
export class SourceDeferred extends Error {
  constructor() {
    super('no source slot free; the body was not read')
  }
}

export function admitBody(res: IncomingMessage, options: UpstreamOptions): void {
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
export async function withSourceSlot<T>(options: UpstreamOptions, fetch: () => Promise<T>): Promise<T> {
  try {
    return await fetch()
  } catch (err) {
    if (!(err instanceof SourceDeferred)) throw err
  }
  await options.admitSource!.wait()
  return fetch()
}

/** Marks failures worth retrying: connection errors, upstream 5xx (never a timeout: see below). */
export class TransientUpstreamError extends ImageError {
  constructor(statusCode: number, message: string, options?: { cause?: unknown }) {
    super(statusCode, message, options)
    this.name = 'TransientUpstreamError'
  }
}

/**
 * The upstream used up its timeout. Never retried: another attempt waits the whole timeout again
 * (a page waited three times Next's 7 s for a 502), and Next's answer (504, or Next 15's bare 500
 * for a body cut by `fetch()`'s timeout) is what operators alert on. See retry.ts.
 */
export class UpstreamTimeoutError extends ImageError {
  constructor(statusCode: number, message: string, options?: { cause?: unknown }) {
    super(statusCode, message, options)
    this.name = 'UpstreamTimeoutError'
  }
}

/**
 * A failure Next 15's `fetch()` reports as a plain error (the redirect limit, an unparsable
 * Location, too many content-codings), which Next answers with a bare 500.
 */
export const fetchFailed = (reason: string) => new ImageError(500, 'Internal Server Error', { cause: new Error(`fetch failed: ${reason}`) })

/** Next 15's `fetch()` body cut by its timeout: a plain error there too, so a bare 500. */
export const fetchTimedOut = (reason: string) => new UpstreamTimeoutError(500, 'Internal Server Error', { cause: new Error(`fetch failed: ${reason}`) })

// Agents are keyed by the pinned addresses (see getName) so a pooled socket is only reused
// for a host that resolved to the same, already checked, addresses.
export type PinnedRequestOptions = RequestOptions & { pinKey?: string }
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
export const agents = { http: new PinnedHttpAgent(agentOptions), https: new PinnedHttpsAgent(agentOptions) }

export function request(url: URL, options: PinnedRequestOptions): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, options, resolve)
    req.on('error', reject)
    req.end()
  })
}

/** A request to `origin` with `path` as the request-target, verbatim. */
export function requestTo(origin: URL, path: string, options: PinnedRequestOptions): Promise<IncomingMessage> {
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

export const timedOut = (cause?: unknown) => new UpstreamTimeoutError(504, MESSAGES.upstreamTimedOut, { cause })

export function conditionalHeaders(validators: UpstreamValidators | undefined): Record<string, string> {
  const headers: Record<string, string> = {}
  if (validators?.etag) headers['if-none-match'] = validators.etag
  if (validators?.lastModified) headers['if-modified-since'] = validators.lastModified
  return headers
}

export const validatorsOf = (res: IncomingMessage): UpstreamValidators => ({
  ...(res.headers.etag ? { etag: res.headers.etag } : {}),
  ...(res.headers['last-modified'] ? { lastModified: res.headers['last-modified'] } : {}),
})

/** What the transform needs of an answered fetch: its body, Next's ETag rule, and the validators kept. */
export function answerOf(res: IncomingMessage, buffer: Buffer, status: number): Upstream {
  return {
    buffer,
    contentType: res.headers['content-type'],
    cacheControl: res.headers['cache-control'],
    etag: extractEtag(res.headers.etag, buffer),
    validators: validatorsOf(res),
    status,
  }
}
