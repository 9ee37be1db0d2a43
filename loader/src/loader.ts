import { hmac } from '@noble/hashes/hmac.js'
import { sha256 } from '@noble/hashes/sha2.js'

/**
 * The `next/image` loader file (`images.loaderFile`) that sends image requests to the sidecar.
 *
 * Next bundles this file into server and client code and inlines the `process.env.*` values
 * that `withImageSidecar` (./config) put into next.config `env` at build time.
 *
 * The loader carries Next's own default-loader mark (`__next_img_default`, see the bottom of
 * this file). Next's `getImgProps` decides several things only for its default loader, and with
 * the mark it decides them for this one exactly as it would without the sidecar: SVG sources are
 * served as they are unless `images.dangerouslyAllowSVG`, data: and blob: URLs and `unoptimized`
 * images are never sent to an optimizer (with Next's own `dpl` handling), and the loader is handed
 * Next's resolved images config (`path` with basePath and trailingSlash, `qualities`). This
 * function then only builds the optimizer URL — Next's `defaultLoader`, with the sidecar origin.
 */

/** What Next hands its default loader. */
export interface ImageLoaderProps {
  src: string
  width: number
  /** The raw `quality` prop; snapped to `config.qualities` here, as Next's default loader does. */
  quality?: number
  /** Next's resolved images config (only what the default loader reads). */
  config?: LoaderImageConfig
}

export interface LoaderImageConfig {
  /** `${basePath}/_next/image`, with a trailing slash when `trailingSlash` is on. */
  path: string
  qualities?: number[]
  localPatterns?: Array<{ pathname?: string; search?: string }>
}

export interface LoaderSettings {
  /** Sidecar origin (optionally with a path prefix), or '' for Next's own optimizer. */
  origin: string
  /** Next's deployment id at build time (`deploymentId` / NEXT_DEPLOYMENT_ID), added as `dpl` to relative sources. */
  deploymentId: string | undefined
  /** Whether the platform serves `/_next/static/immutable` assets without a `dpl` (NEXT_SUPPORTS_IMMUTABLE_ASSETS). */
  immutableAssets?: boolean
  /** The signing key, on the server only (see `signingKey()`); undefined for unsigned URLs. */
  signingKey?: string
  /** The Next major the app is built with (its default loaders differ); default 16. */
  nextMajor?: 15 | 16
}

/** Next 16's `findClosestQuality`: the prop (default 75) snapped to the nearest allowed quality. */
export function findClosestQuality(quality: number | undefined, qualities: number[] | undefined): number {
  const q = quality || 75
  if (!qualities?.length) return q
  return qualities.reduce((prev, cur) => (Math.abs(cur - q) < Math.abs(prev - q) ? cur : prev), qualities[0]!)
}

/** base64url without Buffer: this code also runs in browsers. */
function base64url(bytes: Uint8Array): string {
  let binary = ''
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/** base64url(HMAC-SHA256(key, message)): the form of every sidecar signature. */
export function hmacBase64url(key: string, message: string): string {
  const utf8 = new TextEncoder()
  return base64url(hmac(sha256, utf8.encode(key), utf8.encode(message)))
}

/** The sidecar's signature of one request (same canonical form as the server's sidecar/server/signature.ts). */
export function signature(key: string, url: string, w: string, q: string): string {
  return hmacBase64url(key, `${url}\n${w}\n${q}`)
}

/** Next 15's quality: the prop as it is; without one, the allowed quality nearest 75, else 75. */
export function defaultQuality15(quality: number | undefined, qualities: number[] | undefined): number {
  return quality || qualities?.reduce((prev, cur) => (Math.abs(cur - 75) < Math.abs(prev - 75) ? cur : prev)) || 75
}

const DEFAULT_CONFIG: LoaderImageConfig = { path: '/_next/image', qualities: [75] }

/** Next 15.5's production `defaultLoader`: no `dpl` handling beyond static media, no query check. */
function buildImageUrl15({ src, width, quality, config = DEFAULT_CONFIG }: ImageLoaderProps, settings: LoaderSettings): string {
  const q = defaultQuality15(quality, config.qualities)
  const dpl = src.startsWith('/_next/static/media/') && settings.deploymentId ? `&dpl=${settings.deploymentId}` : ''
  const signed = settings.origin && settings.signingKey ? `&s=${signature(settings.signingKey, src, String(width), String(q))}` : ''
  return `${settings.origin}${config.path}?url=${encodeURIComponent(src)}&w=${width}&q=${q}${dpl}${signed}`
}

/**
 * Next's production `defaultLoader` (next/dist/shared/lib/image-loader.js) of the app's major, prefixed with the
 * sidecar origin: a pure function of its settings, so it can be tested against Next's.
 * (Next's own module cannot be imported here: with a loaderFile, Next aliases it to this file.)
 */
export function buildImageUrl(props: ImageLoaderProps, settings: LoaderSettings): string {
  if (settings.nextMajor === 15) return buildImageUrl15(props, settings)
  let { src } = props
  const { width, quality, config = DEFAULT_CONFIG } = props
  let deploymentId = settings.deploymentId
  if (src.startsWith('/') && !src.startsWith('//')) {
    const assetToken = settings.immutableAssets ? undefined : settings.deploymentId
    if (src.includes('/_next/static/immutable') && !assetToken) {
      // An immutable static asset the platform serves as such: no `dpl`, as in Next.
      deploymentId = undefined
    } else {
      // As Next: a `dpl` already on the src wins and is moved to the optimizer URL.
      const qIndex = src.indexOf('?')
      if (qIndex !== -1) {
        const params = new URLSearchParams(src.slice(qIndex + 1))
        const srcDpl = params.get('dpl')
        if (srcDpl) {
          deploymentId = srcDpl
          params.delete('dpl')
          const remaining = params.toString()
          src = src.slice(0, qIndex) + (remaining ? `?${remaining}` : '')
        }
      }
    }
  }
  const patterns = config.localPatterns
  if (src.startsWith('/') && src.includes('?') && patterns?.length === 1 && patterns[0]!.pathname === '**' && patterns[0]!.search === '') {
    // Next's own message, thrown in production too.
    throw new Error(
      `Image with src "${src}" is using a query string which is not configured in images.localPatterns.` +
        `\nRead more: https://nextjs.org/docs/messages/next-image-unconfigured-localpatterns`,
    )
  }
  const q = findClosestQuality(quality, config.qualities)
  const dpl = src.startsWith('/') && deploymentId ? `&dpl=${deploymentId}` : ''
  const signed = settings.origin && settings.signingKey ? `&s=${signature(settings.signingKey, src, String(width), String(q))}` : ''
  return `${settings.origin}${config.path}?url=${encodeURIComponent(src)}&w=${width}&q=${q}${dpl}${signed}`
}

/** A loader for these settings, carrying Next's default-loader mark (see the top of this file). */
export function createImageLoader(settings: LoaderSettings | (() => LoaderSettings)): ((props: ImageLoaderProps) => string) & { __next_img_default: true } {
  const settingsOf = typeof settings === 'function' ? settings : () => settings
  return Object.assign((props: ImageLoaderProps) => buildImageUrl(props, settingsOf()), { __next_img_default: true as const })
}

/**
 * The key is read at run time and on the server only: it is deliberately not one of the values
 * baked into bundles, so it never reaches a browser. Images rendered in the browser (client
 * components) therefore carry no signature — with signing on, render <Image> in Server Components.
 */
function signingKey(): string | undefined {
  return typeof window === 'undefined' ? process.env.IMAGE_SIDECAR_SIGNING_KEY || undefined : undefined
}

// Each `process.env.X` is written out in full: that is the form Next's compiler replaces.
const baked = {
  origin: process.env.NEXT_IMAGE_SIDECAR_URL ?? '',
  deploymentId: process.env.NEXT_IMAGE_SIDECAR_DEPLOYMENT_ID || undefined,
  immutableAssets: Boolean(process.env.NEXT_SUPPORTS_IMMUTABLE_ASSETS),
  nextMajor: process.env.NEXT_IMAGE_SIDECAR_NEXT_MAJOR === '15' ? (15 as const) : (16 as const),
}

const imageSidecarLoader = createImageLoader(() => ({ ...baked, signingKey: signingKey() }))
export default imageSidecarLoader
