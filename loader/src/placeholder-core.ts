import { hmacBase64url } from './loader.js'

/**
 * The logic of `getImagePlaceholder` (the `./placeholder` entry), without the `server-only` marker
 * so that plain Node can import it (tests, scripts). Apps import `next-image-sidecar-loader/placeholder`.
 */

export interface ImagePlaceholderOptions {
  /** Give up after this many ms (default 3000): the result then has no placeholder. */
  timeoutMs?: number
  /** width/height to return when the sidecar cannot answer, so <Image src={result}> still renders. */
  fallback?: { width: number; height: number }
  /**
   * The sidecar's base URL as this server reaches it. Default: env IMAGE_SIDECAR_INTERNAL_URL, then the
   * sidecar URL withImageSidecar baked in (process.env.NEXT_IMAGE_SIDECAR_URL), then env IMAGE_SIDECAR_URL.
   */
  sidecarUrl?: string
  signal?: AbortSignal
}

export type ImagePlaceholderFailure = 'not-configured' | 'timeout' | 'unavailable' | 'rejected'

/** Why a result has no placeholder. Never thrown. */
export interface ImagePlaceholderError {
  reason: ImagePlaceholderFailure
  status?: number
  message: string
}

/**
 * A result with a size: a StaticImageData (the sidecar's answer, or the fallback size when it could not
 * answer), so TypeScript takes it as `<Image src>` like a static import.
 */
export interface SizedImagePlaceholder {
  /** The src given, unchanged. */
  src: string
  /** Intrinsic size as displayed (after EXIF orientation), or the fallback's. */
  width: number
  height: number
  blurDataURL?: string
  blurWidth?: number
  blurHeight?: number
  /** 'blur' exactly when blurDataURL is set. */
  placeholder: 'blur' | 'empty'
  /** Why there is no placeholder (absent on success). */
  error?: ImagePlaceholderError
}

/** A failed call without a fallback: no size, so it is not a valid `<Image src>` until narrowed away. */
export interface UnsizedImagePlaceholder {
  src: string
  width?: undefined
  height?: undefined
  blurDataURL?: undefined
  blurWidth?: undefined
  blurHeight?: undefined
  placeholder: 'empty'
  error: ImagePlaceholderError
}

/**
 * What getImagePlaceholder resolves to. With a `fallback` it is always sized; without one, check
 * `photo.width !== undefined` and TypeScript narrows it to a StaticImageData.
 */
export type ImagePlaceholder = SizedImagePlaceholder | UnsizedImagePlaceholder

/** What a 200 of `/_sidecar/placeholder` carries once checked (its `src` is not used: ours is the caller's). */
export interface PlaceholderAnswer {
  width: number
  height: number
  blurDataURL?: string
  blurWidth: number
  blurHeight: number
}

const DEFAULT_TIMEOUT_MS = 3000
/** The longest wait a timer can take (setTimeout's limit, 2^31−1 ms: above it Node fires at once). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1
/** Enough for any error text of the sidecar; a longer body is cut so that a log line stays a line. */
const MAX_MESSAGE = 500
/** A placeholder answer is under 2 KiB (an 8-pixel blur); far more is not one, and is not read on. */
const MAX_ANSWER_BYTES = 64 * 1024

/**
 * The sidecar base URL to ask, '' when none is configured. The baked value is read as the literal
 * `process.env.NEXT_IMAGE_SIDECAR_URL`: that is the form Next's compiler replaces in the server bundle.
 */
export function resolvePlaceholderSidecarUrl(
  option: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  baked: string | undefined = process.env.NEXT_IMAGE_SIDECAR_URL,
): string {
  const raw = option || env.IMAGE_SIDECAR_INTERNAL_URL || baked || env.IMAGE_SIDECAR_URL || ''
  return String(raw).trim().replace(/\/+$/, '')
}

/**
 * Whether a configured sidecar URL can be asked: an absolute http(s) URL without credentials, query or
 * fragment (as withImageSidecar requires of its URL). A result may be rendered into the page, so a
 * refusal says what is wrong, never the value (which may hold a password or an internal address).
 */
export function sidecarUrlProblem(url: string): string | undefined {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return 'the sidecar URL is not an absolute URL'
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'the sidecar URL is not http or https'
  if (parsed.username || parsed.password || parsed.search || parsed.hash) return 'the sidecar URL carries credentials, a query or a fragment'
  return undefined
}

/** base64url(HMAC-SHA256(key, "placeholder\n" + src)): the endpoint's `s` (sidecar/server/signature.ts). */
export function placeholderSignature(key: string, src: string): string {
  return hmacBase64url(key, `placeholder\n${src}`)
}

/** The endpoint URL for one src; `sidecarUrl` may carry a path prefix (a gateway mounting the sidecar below one). */
export function placeholderUrl(sidecarUrl: string, src: string, signingKey?: string): string {
  const signed = signingKey ? `&s=${placeholderSignature(signingKey, src)}` : ''
  return `${sidecarUrl}/_sidecar/placeholder?url=${encodeURIComponent(src)}${signed}`
}

const isPositiveInteger = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0

/** The checked answer, or undefined when the body is not the StaticImageData the contract promises. */
export function parsePlaceholderAnswer(body: unknown): PlaceholderAnswer | undefined {
  if (typeof body !== 'object' || body === null) return undefined
  const { width, height, blurDataURL, blurWidth, blurHeight } = body as Record<string, unknown>
  if (!isPositiveInteger(width) || !isPositiveInteger(height)) return undefined
  if (blurDataURL === undefined) {
    return { width, height, blurWidth: isCount(blurWidth) ? blurWidth : 0, blurHeight: isCount(blurHeight) ? blurHeight : 0 }
  }
  if (typeof blurDataURL !== 'string' || !blurDataURL.startsWith('data:image/')) return undefined
  // Next sizes the blur SVG's viewBox from these; a blur without them would not look like a static import's.
  if (!isPositiveInteger(blurWidth) || !isPositiveInteger(blurHeight)) return undefined
  return { width, height, blurDataURL, blurWidth, blurHeight }
}

/** The result for a sidecar answer. */
export function placeholderOf(src: string, answer: PlaceholderAnswer): SizedImagePlaceholder {
  return { src, ...answer, placeholder: answer.blurDataURL ? 'blur' : 'empty' }
}

/** The result when there is no answer: the fallback size (if any), no placeholder, the reason. */
export function failedPlaceholder(src: string, error: ImagePlaceholderError, fallback?: ImagePlaceholderOptions['fallback']): ImagePlaceholder {
  return fallback ? { src, width: fallback.width, height: fallback.height, placeholder: 'empty', error } : { src, placeholder: 'empty', error }
}

class Failure extends Error {
  constructor(
    readonly reason: Exclude<ImagePlaceholderFailure, 'not-configured'>,
    message: string,
    readonly status?: number,
  ) {
    super(message)
  }
}

/** At most `limit` bytes of a body, the rest left unread (the connection is cancelled); undefined when there is more. */
async function readCapped(res: Response, limit: number): Promise<string | undefined> {
  if (Number(res.headers.get('content-length') ?? 0) > limit) {
    await res.body?.cancel()
    return undefined
  }
  const reader = res.body?.getReader()
  if (!reader) return ''
  const chunks: Uint8Array[] = []
  let bytes = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    bytes += value.byteLength
    if (bytes > limit) {
      await reader.cancel()
      return undefined
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}

async function messageOf(res: Response): Promise<string> {
  const text = ((await readCapped(res, MAX_MESSAGE * 4)) ?? '').trim()
  return text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE)}…` : text || `HTTP ${res.status}`
}

async function ask(url: string, signal: AbortSignal): Promise<PlaceholderAnswer> {
  const res = await fetch(url, { signal, headers: { accept: 'application/json' } })
  if (res.status >= 400 && res.status < 500) throw new Failure('rejected', await messageOf(res), res.status)
  if (res.status !== 200) throw new Failure('unavailable', await messageOf(res), res.status)
  const text = await readCapped(res, MAX_ANSWER_BYTES)
  if (text === undefined) throw new Failure('unavailable', `the sidecar answered 200 with a body larger than ${MAX_ANSWER_BYTES} bytes`, 200)
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    throw new Failure('unavailable', 'the sidecar answered 200 with a body that is not JSON', 200)
  }
  const answer = parsePlaceholderAnswer(body)
  if (!answer) throw new Failure('unavailable', 'the sidecar answered 200 without a positive integer width and height (or with a malformed blur)', 200)
  return answer
}

/**
 * Asks the sidecar for the intrinsic size and blur placeholder of `src` (what `<Image src>` would be given:
 * a path with basePath, or an absolute URL). Server only; never throws: on failure the result carries
 * `error`, the fallback size and `placeholder: 'empty'`, and one console.warn says why.
 *
 * @example
 * const photo = await getImagePlaceholder('https://cms.example.com/a.jpg', { fallback: { width: 1200, height: 800 } })
 * return <Image src={photo} placeholder={photo.placeholder} alt="…" sizes="100vw" />
 */
export function getImagePlaceholder(src: string, options: ImagePlaceholderOptions & { fallback: { width: number; height: number } }): Promise<SizedImagePlaceholder>
export function getImagePlaceholder(src: string, options?: ImagePlaceholderOptions): Promise<ImagePlaceholder>
export async function getImagePlaceholder(src: string, options: ImagePlaceholderOptions = {}): Promise<ImagePlaceholder> {
  const sidecarUrl = resolvePlaceholderSidecarUrl(options.sidecarUrl)
  if (sidecarUrl === '') {
    // Next's own optimizer serves the images then; that is a configuration, not a failure worth a warning.
    return failedPlaceholder(src, { reason: 'not-configured', message: 'no sidecar URL is configured' }, options.fallback)
  }
  const problem = sidecarUrlProblem(sidecarUrl)
  if (problem) {
    const message = `${problem} (the sidecarUrl option, IMAGE_SIDECAR_INTERNAL_URL, the URL withImageSidecar baked in, or IMAGE_SIDECAR_URL)`
    console.warn(`next-image-sidecar-loader: no placeholder for ${JSON.stringify(src)}: ${message}`)
    return failedPlaceholder(src, { reason: 'not-configured', message }, options.fallback)
  }
  const wanted = Number(options.timeoutMs)
  const timeoutMs = Number.isFinite(wanted) && wanted > 0 ? Math.min(Math.ceil(wanted), MAX_TIMEOUT_MS) : DEFAULT_TIMEOUT_MS
  const timeout = AbortSignal.timeout(timeoutMs)
  try {
    const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout
    const url = placeholderUrl(sidecarUrl, src, process.env.IMAGE_SIDECAR_SIGNING_KEY || undefined)
    return placeholderOf(src, await ask(url, signal))
  } catch (err) {
    // Next's own control flow passes through here: a prerender that ends rejects the fetches it started
    // (Cache Components), a dynamic bail-out or a redirect throws. Those are not failures of the
    // sidecar; swallowing them would break Next's rendering and log a false "cannot be reached".
    await rethrowNextControlFlow(err)
    const error: ImagePlaceholderError =
      err instanceof Failure
        ? { reason: err.reason, ...(err.status !== undefined ? { status: err.status } : {}), message: err.message }
        : timeout.aborted
          ? { reason: 'timeout', message: `no answer from the sidecar within ${timeoutMs} ms` }
          : options.signal?.aborted
            ? { reason: 'unavailable', message: 'aborted by the caller’s signal' }
            : { reason: 'unavailable', message: `the sidecar cannot be reached: ${causeOf(err)}` }
    const status = error.status !== undefined ? ` ${error.status}` : ''
    console.warn(`next-image-sidecar-loader: no placeholder for ${JSON.stringify(src)} (${error.reason}${status}): ${error.message}`)
    return failedPlaceholder(src, error, options.fallback)
  }
}

/**
 * Rethrows Next's own control-flow errors through Next's public `unstable_rethrow`. Loaded when needed:
 * `next` is an optional peer, and a plain Node script using the Pages entry may not have it (then nothing
 * of Next's can be in flight either).
 */
async function rethrowNextControlFlow(err: unknown): Promise<void> {
  const navigation = await import('next/navigation.js').catch(() => undefined)
  navigation?.unstable_rethrow(err)
}

/**
 * undici's "fetch failed" hides the useful part (ECONNREFUSED, ENOTFOUND…) in `cause`. Only codes and
 * names: a message may hold the request URL (the internal address, a signature), and results reach pages.
 */
function causeOf(err: unknown): string {
  const cause = (err as { cause?: { code?: unknown } })?.cause
  const code = typeof cause?.code === 'string' ? cause.code : (err as { code?: unknown })?.code
  return typeof code === 'string' ? code : err instanceof Error ? err.name : 'unknown error'
}
