import { z } from 'zod'
import { ConfigError } from '../errors.js'
import { hasRemoteMatch, type RemotePattern, type LocalPattern } from './match.js'
import { lineOf, PROFILES, type NextLine, type NextMajor, type NextProfile } from './next-version.js'

/**
 * The part of a next.config the optimizer reads, with the Next line's defaults applied and
 * normalised exactly as its `next/src/server/config.ts` does it.
 */
export interface ImagesConfig {
  deviceSizes: number[]
  imageSizes: number[]
  /** undefined: any quality 1–100 (Next 15 without `images.qualities`). */
  qualities: number[] | undefined
  formats: Array<'image/avif' | 'image/webp'>
  minimumCacheTTL: number
  dangerouslyAllowSVG: boolean
  dangerouslyAllowLocalIP: boolean
  contentSecurityPolicy: string
  contentDispositionType: 'inline' | 'attachment'
  maximumRedirects: number
  maximumResponseBody: number
  /** Next's LRU bound on its disk cache (0: no disk cache; undefined: half the free disk). The sidecar applies it to its embedded store (open-store.ts). */
  maximumDiskCacheSize: number | undefined
  /** undefined: every local path and query (Next 15 without `images.localPatterns`). */
  localPatterns: LocalPattern[] | undefined
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
  /** The Next line whose semantics apply (see next-version.ts). */
  profile: NextProfile
  basePath: string
  /** Next's `trailingSlash`: its loader then emits `/_next/image/?…`, served as it is. */
  trailingSlash: boolean
  images: ImagesConfig
  sharp: SharpConfig
  /**
   * 16.5's `experimental.imgOptSafeMode.nextImage` (`true` or `{ nextImage: true }`): Next encodes with
   * @next/safe-image-optimization and offers only the formats it writes. The sidecar applies the
   * format filter (`negotiableFormats`) and keeps encoding with sharp (said at start).
   */
  safeMode: boolean
}

/** Formats safe mode can write (16.5's `NSIO_OUTPUT_MIME_TYPES`): AVIF is not among them. */
export const SAFE_MODE_OUTPUT_TYPES: readonly string[] = ['image/gif', 'image/jpeg', 'image/png', 'image/webp']

/** The formats `validateParams` negotiates over: 16.5 in safe mode drops what nsio cannot write. */
export function negotiableFormats(config: ResolvedNextConfig): string[] {
  const { formats } = config.images
  return config.safeMode ? formats.filter((f) => SAFE_MODE_OUTPUT_TYPES.includes(f)) : [...formats]
}

/**
 * `imageConfigDefault` (shared/lib/image-config.ts) where Next 15.5 and 16.4 agree; the profile
 * has the rest.
 */
export const IMAGE_DEFAULTS = {
  deviceSizes: [640, 750, 828, 1080, 1200, 1920, 2048, 3840],
  formats: ['image/webp'] as Array<'image/avif' | 'image/webp'>,
  dangerouslyAllowSVG: false,
  dangerouslyAllowLocalIP: false,
  contentSecurityPolicy: "script-src 'none'; frame-src 'none'; sandbox;",
  contentDispositionType: 'attachment' as const,
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

/** `images` defaults that differ by line (Next lists some keys as present but undefined). */
const LINE_IMAGE_DEFAULTS: Record<NextMajor, Record<string, unknown>> = {
  15: { maximumDiskCacheSize: undefined, localPatterns: undefined, qualities: undefined },
  16: { maximumDiskCacheSize: undefined, localPatterns: undefined, maximumRedirects: 3, dangerouslyAllowLocalIP: false, qualities: [75], customCacheHandler: false },
}

/**
 * What Next passes a next.config function as `defaultConfig` (server/config-shared.ts), for the keys
 * an image config may build on: `images` whole (the line's `imageConfigDefault`), the sharp settings
 * of `experimental`, and the plain top-level values. Next's own object is the oracle in the tests.
 * A fresh copy each call: a config may change what it was given.
 */
export function nextDefaultConfig(version: NextMajor | NextLine): Record<string, unknown> & { images: Record<string, unknown> & { deviceSizes: number[] } } {
  const profile = PROFILES[lineOf(version)]
  const { major } = profile
  return {
    env: {},
    distDir: '.next',
    cleanDistDir: true,
    assetPrefix: '',
    basePath: '',
    trailingSlash: false,
    i18n: null,
    pageExtensions: ['tsx', 'ts', 'jsx', 'js'],
    poweredByHeader: true,
    compress: true,
    generateEtags: true,
    useFileSystemPublicRoutes: true,
    productionBrowserSourceMaps: false,
    reactStrictMode: null,
    images: {
      deviceSizes: [...IMAGE_DEFAULTS.deviceSizes],
      imageSizes: [...profile.defaults.imageSizes],
      path: '/_next/image',
      loader: IMAGE_DEFAULTS.loader,
      loaderFile: '',
      domains: [],
      disableStaticImages: false,
      minimumCacheTTL: profile.defaults.minimumCacheTTL,
      formats: [...IMAGE_DEFAULTS.formats],
      maximumResponseBody: IMAGE_DEFAULTS.maximumResponseBody,
      dangerouslyAllowSVG: IMAGE_DEFAULTS.dangerouslyAllowSVG,
      contentSecurityPolicy: IMAGE_DEFAULTS.contentSecurityPolicy,
      contentDispositionType: IMAGE_DEFAULTS.contentDispositionType,
      remotePatterns: [],
      unoptimized: IMAGE_DEFAULTS.unoptimized,
      ...structuredClone(LINE_IMAGE_DEFAULTS[major]),
    },
    experimental: {
      imgOptConcurrency: SHARP_DEFAULTS.concurrency,
      imgOptTimeoutInSeconds: SHARP_DEFAULTS.timeoutInSeconds,
      imgOptMaxInputPixels: SHARP_DEFAULTS.maxInputPixels,
      imgOptSequentialRead: SHARP_DEFAULTS.sequentialRead,
      ...(profile.sharpKeys.has('imgOptOperationCache') ? { imgOptOperationCache: SHARP_DEFAULTS.operationCache } : {}),
      ...(profile.sharpKeys.has('imgOptMozjpeg') ? { imgOptMozjpeg: SHARP_DEFAULTS.mozjpeg } : {}),
      ...(profile.safeMode ? { imgOptSafeMode: false } : {}),
    },
  }
}

const sizes = z.array(z.number().int().gte(1).lte(10000)).max(25)

/** Next's zod schema for `images` (server/config-schema.ts), same limits; trimmed per line below. */
const imagesSchema16 = z
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

/** Next 15.5's: without the keys 16 added (a 15.5 `next build` exits 1 on them). */
const imagesSchema15 = imagesSchema16.omit({ dangerouslyAllowLocalIP: true, maximumRedirects: true, customCacheHandler: true }).strict()

const experimentalSchema = z
  .object({
    imgOptConcurrency: z.number().int().min(1).nullable().optional(),
    imgOptOperationCache: z.boolean().nullable().optional(),
    imgOptMaxInputPixels: z.number().int().min(1).optional(),
    imgOptSequentialRead: z.boolean().nullable().optional(),
    imgOptTimeoutInSeconds: z.number().int().min(1).optional(),
    imgOptMozjpeg: z.boolean().optional(),
    // 16.5's schema; 16.4 and 15.5 pass unknown experimental keys through, so does this.
    imgOptSafeMode: z.union([z.boolean(), z.object({ nextImage: z.boolean().optional() }).strict()]).optional(),
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
export function resolveNextConfig(userConfig: Record<string, unknown>, source = 'next.config', profile: NextProfile = PROFILES['16.5']): ResolvedNextConfig {
  const basePath = userConfig.basePath ?? ''
  if (typeof basePath !== 'string') {
    throw new ConfigError(`${source}: basePath: expected a string, received ${typeof basePath}`)
  }
  if (basePath !== '' && (basePath === '/' || !basePath.startsWith('/') || basePath.endsWith('/'))) {
    throw new ConfigError(
      `${source}: basePath: has to be an empty string or a path prefix that starts with / and does not end with / (received "${basePath}")`,
    )
  }

  const imagesSchema = profile.major === 15 ? imagesSchema15 : imagesSchema16
  const imagesResult = imagesSchema.safeParse(userConfig.images ?? {})
  if (!imagesResult.success) {
    throw new ConfigError(
      `${source}: invalid images configuration for Next.js ${profile.major}:\n${describeIssues('images', imagesResult.error)}`,
    )
  }
  const experimentalResult = experimentalSchema.safeParse(userConfig.experimental ?? {})
  if (!experimentalResult.success) {
    throw new ConfigError(
      `${source}: invalid experimental configuration:\n${describeIssues('experimental', experimentalResult.error)}`,
    )
  }
  // The keys one line lacks are absent from its parsed result.
  const user = imagesResult.data as z.infer<typeof imagesSchema16>
  const experimental = experimentalResult.data

  const localPatterns: LocalPattern[] | undefined = user.localPatterns
    ? user.localPatterns.map((p) => ({ ...p }))
    : profile.defaults.localPatterns?.map((p) => ({ ...p }))
  if (user.localPatterns && localPatterns) {
    // Next always allows statically imported images once the user lists localPatterns.
    for (const prefix of profile.staticMedia) {
      const pathname = `${prefix}/**`
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
    profile,
    basePath,
    trailingSlash: userConfig.trailingSlash === true,
    images: {
      deviceSizes: user.deviceSizes ?? IMAGE_DEFAULTS.deviceSizes,
      imageSizes: user.imageSizes ?? profile.defaults.imageSizes,
      qualities: user.qualities ?? profile.defaults.qualities,
      formats: user.formats ?? IMAGE_DEFAULTS.formats,
      minimumCacheTTL: user.minimumCacheTTL ?? profile.defaults.minimumCacheTTL,
      dangerouslyAllowSVG: user.dangerouslyAllowSVG ?? IMAGE_DEFAULTS.dangerouslyAllowSVG,
      dangerouslyAllowLocalIP: user.dangerouslyAllowLocalIP ?? IMAGE_DEFAULTS.dangerouslyAllowLocalIP,
      contentSecurityPolicy: user.contentSecurityPolicy ?? IMAGE_DEFAULTS.contentSecurityPolicy,
      contentDispositionType: user.contentDispositionType ?? IMAGE_DEFAULTS.contentDispositionType,
      maximumRedirects: user.maximumRedirects ?? profile.defaults.maximumRedirects,
      maximumResponseBody: user.maximumResponseBody ?? IMAGE_DEFAULTS.maximumResponseBody,
      maximumDiskCacheSize: user.maximumDiskCacheSize,
      localPatterns,
      remotePatterns,
      domains: user.domains ?? IMAGE_DEFAULTS.domains,
      unoptimized: user.unoptimized ?? IMAGE_DEFAULTS.unoptimized,
      loader,
    },
    sharp: {
      concurrency: experimental.imgOptConcurrency ?? SHARP_DEFAULTS.concurrency,
      operationCache: (profile.sharpKeys.has('imgOptOperationCache') ? experimental.imgOptOperationCache : undefined) ?? SHARP_DEFAULTS.operationCache,
      maxInputPixels: experimental.imgOptMaxInputPixels ?? SHARP_DEFAULTS.maxInputPixels,
      sequentialRead: experimental.imgOptSequentialRead ?? SHARP_DEFAULTS.sequentialRead,
      timeoutInSeconds: experimental.imgOptTimeoutInSeconds ?? SHARP_DEFAULTS.timeoutInSeconds,
      mozjpeg: (profile.sharpKeys.has('imgOptMozjpeg') ? experimental.imgOptMozjpeg : undefined) ?? SHARP_DEFAULTS.mozjpeg,
    },
    // Next's normalisation: `true` turns every feature on; in the object form an omitted key is off.
    safeMode: profile.safeMode && (typeof experimental.imgOptSafeMode === 'object' ? experimental.imgOptSafeMode.nextImage ?? false : !!experimental.imgOptSafeMode),
  }
}

/** What the sidecar's own options change in the resolved config (see SidecarOptions). */
export interface ConfigOverrides {
  nextConfig?: Record<string, unknown>
  /** A line, or a major for its newest line (16: 16.5). */
  nextVersion?: NextMajor | NextLine
  dangerouslyAllowLocalIP?: boolean
  maximumRedirects?: number
}

/**
 * The next.config resolved under the chosen Next line, with the sidecar's own switches applied:
 * `dangerouslyAllowLocalIP` turns the private-IP guard off on any line (Next 15's schema has no such
 * key; on 16 either it or the config key does), and `maximumRedirects` overrides the line's limit.
 */
export function resolveSidecarConfig(options: ConfigOverrides): ResolvedNextConfig {
  const resolved = resolveNextConfig(options.nextConfig ?? {}, 'next.config', PROFILES[lineOf(options.nextVersion ?? 16)])
  if (options.dangerouslyAllowLocalIP) resolved.images.dangerouslyAllowLocalIP = true
  if (options.maximumRedirects !== undefined) {
    if (!Number.isInteger(options.maximumRedirects) || options.maximumRedirects < 0 || options.maximumRedirects > 20) {
      throw new ConfigError(`maximumRedirects: expected an integer from 0 to 20, received ${options.maximumRedirects}`)
    }
    resolved.images.maximumRedirects = options.maximumRedirects
  }
  return resolved
}
