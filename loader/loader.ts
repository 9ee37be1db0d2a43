import { hmac } from '@noble/hashes/hmac'
import { sha256 } from '@noble/hashes/sha2'

/**
 * The `next/image` loader file (`images.loaderFile`) that sends image requests to the sidecar.
 *
 * Next bundles this file into server and client code and inlines the `process.env.*` values
 * that `withImageSidecar` (./config) put into next.config `env` at build time. With no sidecar
 * URL it returns exactly what Next's default loader returns, so Next's own optimizer serves.
 */

export interface ImageLoaderProps {
  src: string
  width: number
  /** The raw `quality` prop: Next does not default or snap it for custom loaders. */
  quality?: number
}

function parseQualities(list: string | undefined): number[] {
  const parsed = (list ?? '')
    .split(',')
    .map((q) => parseInt(q, 10))
    .filter((q) => q >= 1 && q <= 100)
  return parsed.length > 0 ? parsed : [75]
}

/** Next's `findClosestQuality`: the prop (default 75) snapped to the nearest allowed quality. */
export function findClosestQuality(quality: number | undefined, qualities: number[]): number {
  const q = quality || 75
  return qualities.reduce((prev, cur) => (Math.abs(cur - q) < Math.abs(prev - q) ? cur : prev), qualities[0]!)
}

export interface LoaderSettings {
  /** Sidecar origin (optionally with a path prefix), or '' for Next's own optimizer. */
  origin: string
  /** `${basePath}/_next/image` (with a trailing slash when `trailingSlash`). */
  path: string
  qualities: number[]
  deploymentId: string | undefined
  /** The signing key, on the server only (see `signingKey()`); undefined for unsigned URLs. */
  signingKey?: string
}

/** base64url without Buffer: this code also runs in browsers. */
function base64url(bytes: Uint8Array): string {
  let binary = ''
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/** The sidecar's signature of one request (same canonical form as sidecar/signature.ts). */
export function signature(key: string, url: string, w: string, q: string): string {
  return base64url(hmac(sha256, key, `${url}\n${w}\n${q}`))
}

/** The loader as a pure function of its settings, so it can be tested against Next's. */
export function buildImageUrl({ src, width, quality }: ImageLoaderProps, settings: LoaderSettings): string {
  let deploymentId = settings.deploymentId
  if (src.startsWith('/') && !src.startsWith('//')) {
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
  const q = findClosestQuality(quality, settings.qualities)
  const dpl = src.startsWith('/') && deploymentId ? `&dpl=${deploymentId}` : ''
  const signed = settings.origin && settings.signingKey ? `&s=${signature(settings.signingKey, src, String(width), String(q))}` : ''
  return `${settings.origin}${settings.path}?url=${encodeURIComponent(src)}&w=${width}&q=${q}${dpl}${signed}`
}

// Each `process.env.X` is written out in full: that is the form Next's compiler replaces.
const settings: LoaderSettings = {
  origin: process.env.NEXT_IMAGE_SIDECAR_URL ?? '',
  path: process.env.NEXT_IMAGE_SIDECAR_PATH || '/_next/image',
  qualities: parseQualities(process.env.NEXT_IMAGE_SIDECAR_QUALITIES),
  deploymentId: process.env.NEXT_IMAGE_SIDECAR_DEPLOYMENT_ID || undefined,
}

/**
 * The key is read at run time and on the server only: it is deliberately not one of the values
 * baked into bundles, so it never reaches a browser. Images rendered in the browser (client
 * components) therefore carry no signature — with signing on, render <Image> in Server Components.
 */
function signingKey(): string | undefined {
  return typeof window === 'undefined' ? process.env.IMAGE_SIDECAR_SIGNING_KEY || undefined : undefined
}

export default function imageSidecarLoader(props: ImageLoaderProps): string {
  return buildImageUrl(props, { ...settings, signingKey: signingKey() })
}
