import { z } from 'zod'
import { ConfigError } from './errors.js'
import { hasRemoteMatch, type RemotePattern, type LocalPattern } from './match.js'

/**
 * The part of a next.config the optimizer reads, with Next 16.4's defaults applied and
 * normalised exactly as `next/src/server/config.ts` does it.
 */
export interface ImagesConfig {
  deviceSizes: number[]
  imageSizes: number[]
  qualities: number[]
  formats: Array<'image/avif' | 'image/webp'>
  minimumCacheTTL: number
  dangerouslyAllowSVG: boolean
  dangerouslyAllowLocalIP: boolean
  contentSecurityPolicy: string
  contentDispositionType: 'inline' | 'attachment'
  maximumRedirects: number
  maximumResponseBody: number
  localPatterns: LocalPattern[]
  remotePatterns: RemotePattern[]
  domains: string[]
  unoptimized: boolean
  loader: string
}

/** The `experimental.imgOpt*` settings that steer sharp. */
export interface SharpConfig {
  concurrency: number | null
  operationCache: boolean | null
  maxInputPixels: number
  sequentialRead: boolean | null
  timeoutInSeconds: number
  mozjpeg: boolean
}

export interface ResolvedNextConfig {
  basePath: string
  images: ImagesConfig
  sharp: SharpConfig
}

/** `imageConfigDefault` of next 16.4.6 (shared/lib/image-config.ts). */
export const IMAGE_DEFAULTS = {
  deviceSizes: [640, 750, 828, 1080, 1200, 1920, 2048, 3840],
  imageSizes: [32, 48, 64, 96, 128, 256, 384],
  qualities: [75],
  formats: ['image/webp'] as Array<'image/avif' | 'image/webp'>,
  minimumCacheTTL: 14400,
  dangerouslyAllowSVG: false,
  dangerouslyAllowLocalIP: false,
  contentSecurityPolicy: "script-src 'none'; frame-src 'none'; sandbox;",
  contentDispositionType: 'attachment' as const,
  maximumRedirects: 3,
  maximumResponseBody: 50_000_000,
  remotePatterns: [] as RemotePattern[],
  domains: [] as string[],
  unoptimized: false,
  loader: 'default',
}

const SHARP_DEFAULTS: SharpConfig = {
  concurrency: null,
  operationCache: null,
  maxInputPixels: 268_402_689,
  sequentialRead: null,
  timeoutInSeconds: 7,
  mozjpeg: true,
}

const sizes = z.array(z.number().int().gte(1).lte(10000)).max(25)

/** Next's zod schema for `images` (server/config-schema.ts), same limits. */
const imagesSchema = z
  .object({
    localPatterns: z
      .array(z.object({ pathname: z.string().optional(), search: z.string().optional() }).strict())
      .max(25)
      .optional(),
    remotePatterns: z
      .array(
        z.union([
          z.instanceof(URL),
          z
            .object({
              hostname: z.string(),
              pathname: z.string().optional(),
              port: z.string().max(5).optional(),
              protocol: z.enum(['http', 'https']).optional(),
              search: z.string().optional(),
            })
            .strict(),
        ]),
      )
      .max(50)
      .optional(),
    unoptimized: z.boolean().optional(),
    customCacheHandler: z.boolean().optional(),
    contentSecurityPolicy: z.string().optional(),
    contentDispositionType: z.enum(['inline', 'attachment']).optional(),
    dangerouslyAllowSVG: z.boolean().optional(),
    dangerouslyAllowLocalIP: z.boolean().optional(),
    deviceSizes: sizes.optional(),
    disableStaticImages: z.boolean().optional(),
    domains: z.array(z.string()).max(50).optional(),
    formats: z.array(z.enum(['image/avif', 'image/webp'])).max(4).optional(),
    imageSizes: sizes.optional(),
    loader: z.enum(['default', 'imgix', 'cloudinary', 'akamai', 'custom']).optional(),
    loaderFile: z.string().optional(),
    maximumDiskCacheSize: z.number().int().min(0).optional(),
    maximumRedirects: z.number().int().min(0).max(20).optional(),
    maximumResponseBody: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
    minimumCacheTTL: z.number().int().gte(0).optional(),
    path: z.string().optional(),
    qualities: z.array(z.number().int().gte(1).lte(100)).min(1).max(20).optional(),
  })
  .strict()

const experimentalSchema = z
  .object({
    imgOptConcurrency: z.number().int().min(1).nullable().optional(),
    imgOptOperationCache: z.boolean().nullable().optional(),
    imgOptMaxInputPixels: z.number().int().min(1).optional(),
    imgOptSequentialRead: z.boolean().nullable().optional(),
    imgOptTimeoutInSeconds: z.number().int().min(1).optional(),
    imgOptMozjpeg: z.boolean().optional(),
  })
  .passthrough()

function describeIssues(prefix: string, error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const key = [prefix, ...issue.path]
        .map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
        .join('')
      return `  ${key}: ${issue.message}`
    })
    .join('\n')
}

/**
 * Validates a user's next.config (the object it exports, after calling it if it is a
 * function) and returns what the optimizer needs, with Next's defaults and normalisation.
 * Throws a ConfigError naming each offending key and its rule.
 */
export function resolveNextConfig(userConfig: Record<string, unknown>, source = 'next.config'): ResolvedNextConfig {
  const basePath = userConfig.basePath ?? ''
  if (typeof basePath !== 'string') {
    throw new ConfigError(`${source}: basePath: expected a string, received ${typeof basePath}`)
  }
  if (basePath !== '' && (basePath === '/' || !basePath.startsWith('/') || basePath.endsWith('/'))) {
    throw new ConfigError(
      `${source}: basePath: has to be an empty string or a path prefix that starts with / and does not end with / (received "${basePath}")`,
    )
  }

  const imagesResult = imagesSchema.safeParse(userConfig.images ?? {})
  if (!imagesResult.success) {
    throw new ConfigError(`${source}: invalid images configuration:\n${describeIssues('images', imagesResult.error)}`)
  }
  const experimentalResult = experimentalSchema.safeParse(userConfig.experimental ?? {})
  if (!experimentalResult.success) {
    throw new ConfigError(
      `${source}: invalid experimental configuration:\n${describeIssues('experimental', experimentalResult.error)}`,
    )
  }
  const user = imagesResult.data
  const experimental = experimentalResult.data

  const localPatterns: LocalPattern[] = user.localPatterns ? user.localPatterns.map((p) => ({ ...p })) : [{ pathname: '**', search: '' }]
  if (user.localPatterns) {
    // Next always allows statically imported images once the user lists localPatterns.
    for (const pathname of ['/_next/static/media/**', '/_next/static/immutable/media/**']) {
      if (!localPatterns.some((p) => p.pathname === pathname && p.search === '')) {
        localPatterns.push({ pathname, search: '' })
      }
    }
  }

  const remotePatterns: RemotePattern[] = (user.remotePatterns ?? []).map((p) => {
    const protocol = p.protocol?.replace(/:$/, '')
    if (protocol !== undefined && protocol !== 'http' && protocol !== 'https') {
      throw new ConfigError(`${source}: images.remotePatterns: protocol must be "http" or "https" (received "${protocol}")`)
    }
    const pattern: RemotePattern = { hostname: p.hostname }
    if (protocol !== undefined) pattern.protocol = protocol as 'http' | 'https'
    if (p.port !== undefined) pattern.port = p.port
    if (p.pathname !== undefined) pattern.pathname = p.pathname
    if (p.search !== undefined) pattern.search = p.search
    return pattern
  })

  const assetPrefix = userConfig.assetPrefix
  if (typeof assetPrefix === 'string' && assetPrefix.startsWith('http')) {
    let url: URL
    try {
      url = new URL(assetPrefix)
    } catch (error) {
      throw new ConfigError(`${source}: assetPrefix: not a valid URL (${String(error)})`)
    }
    if (!hasRemoteMatch([], remotePatterns, url)) {
      remotePatterns.push({ hostname: url.hostname, protocol: url.protocol.replace(/:$/, '') as 'http' | 'https', port: url.port })
    }
  }

  const loader = user.loader ?? IMAGE_DEFAULTS.loader
  const defaultPath = '/_next/image'
  if (loader !== 'default' && loader !== 'custom' && (user.path ?? defaultPath) === defaultPath) {
    throw new ConfigError(`${source}: images.loader "${loader}" also requires images.path to be set to a URL prefix`)
  }

  return {
    basePath,
    images: {
      deviceSizes: user.deviceSizes ?? IMAGE_DEFAULTS.deviceSizes,
      imageSizes: user.imageSizes ?? IMAGE_DEFAULTS.imageSizes,
      qualities: user.qualities ?? IMAGE_DEFAULTS.qualities,
      formats: user.formats ?? IMAGE_DEFAULTS.formats,
      minimumCacheTTL: user.minimumCacheTTL ?? IMAGE_DEFAULTS.minimumCacheTTL,
      dangerouslyAllowSVG: user.dangerouslyAllowSVG ?? IMAGE_DEFAULTS.dangerouslyAllowSVG,
      dangerouslyAllowLocalIP: user.dangerouslyAllowLocalIP ?? IMAGE_DEFAULTS.dangerouslyAllowLocalIP,
      contentSecurityPolicy: user.contentSecurityPolicy ?? IMAGE_DEFAULTS.contentSecurityPolicy,
      contentDispositionType: user.contentDispositionType ?? IMAGE_DEFAULTS.contentDispositionType,
      maximumRedirects: user.maximumRedirects ?? IMAGE_DEFAULTS.maximumRedirects,
      maximumResponseBody: user.maximumResponseBody ?? IMAGE_DEFAULTS.maximumResponseBody,
      localPatterns,
      remotePatterns,
      domains: user.domains ?? IMAGE_DEFAULTS.domains,
      unoptimized: user.unoptimized ?? IMAGE_DEFAULTS.unoptimized,
      loader,
    },
    sharp: {
      concurrency: experimental.imgOptConcurrency ?? SHARP_DEFAULTS.concurrency,
      operationCache: experimental.imgOptOperationCache ?? SHARP_DEFAULTS.operationCache,
      maxInputPixels: experimental.imgOptMaxInputPixels ?? SHARP_DEFAULTS.maxInputPixels,
      sequentialRead: experimental.imgOptSequentialRead ?? SHARP_DEFAULTS.sequentialRead,
      timeoutInSeconds: experimental.imgOptTimeoutInSeconds ?? SHARP_DEFAULTS.timeoutInSeconds,
      mozjpeg: experimental.imgOptMozjpeg ?? SHARP_DEFAULTS.mozjpeg,
    },
  }
}
