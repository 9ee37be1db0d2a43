import { existsSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { detectNextVersion, majorOfVersion, type NextMajor } from './next-version.js'

/** Options of `withImageSidecar`. */
export interface ImageSidecarOptions {
  /**
   * The sidecar's public origin, e.g. `https://img.example.com` (a path prefix is kept).
   * Default: `IMAGE_SIDECAR_URL`, then `NEXT_PUBLIC_IMAGE_SIDECAR_URL`, read when next.config
   * is evaluated (so at `next build`: the value is baked into the bundles). Empty or unset:
   * the config is returned untouched and Next optimizes images itself.
   */
  url?: string
  /** The Next project directory (where `next build` runs). Default: `process.cwd()`. */
  projectDir?: string
}

/** A next.config object, or the function of the phase that Next also accepts. */
type NextConfigObject = Record<string, any>
type NextConfigFunction = (phase: string, context: { defaultConfig: NextConfigObject }) => NextConfigObject | Promise<NextConfigObject>

const LOADER_FILE = fileURLToPath(new URL('./loader.js', import.meta.url))
/** This package and its dependency, bundled with the app (see `transpilePackages` below). */
const BUNDLED = ['next-image-sidecar-loader', '@noble/hashes']

export class ImageSidecarConfigError extends Error {
  constructor(message: string) {
    super(`withImageSidecar: ${message}`)
    this.name = 'ImageSidecarConfigError'
  }
}

/** The sidecar URL from the option or the environment, validated; '' when none is set. */
export function resolveSidecarUrl(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const raw = (option ?? env.IMAGE_SIDECAR_URL ?? env.NEXT_PUBLIC_IMAGE_SIDECAR_URL ?? '').trim()
  if (raw === '') return ''
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ImageSidecarConfigError(`the sidecar URL must be an absolute http(s) URL such as https://img.example.com, received "${raw}"`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ImageSidecarConfigError(`the sidecar URL must use http or https, received "${raw}"`)
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new ImageSidecarConfigError(`the sidecar URL must not carry a query, fragment or credentials, received "${raw}"`)
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`
}

function apply(config: NextConfigObject, origin: string, projectDir: string): NextConfigObject {
  const images: Record<string, any> = config.images ?? {}
  if (images.loader !== undefined && images.loader !== 'default') {
    throw new ImageSidecarConfigError(
      `images.loader is "${images.loader}"; leave it unset or "default": with any other loader Next's own /_next/image route answers 404 and there is no fallback`,
    )
  }
  if (images.loaderFile) throw new ImageSidecarConfigError(`images.loaderFile is already set to "${images.loaderFile}"; the sidecar needs its own loader file`)
  if (images.unoptimized) throw new ImageSidecarConfigError('images.unoptimized is true, so no image would be optimized by anyone; remove it or the sidecar')
  const external = BUNDLED.filter((name) => (config.serverExternalPackages ?? []).includes(name))
  if (external.length > 0) {
    throw new ImageSidecarConfigError(`serverExternalPackages lists ${external.join(' and ')}; remove it: the sidecar's packages must be bundled (Next refuses a package in both serverExternalPackages and transpilePackages)`)
  }
  const loaderFile = relative(projectDir, LOADER_FILE)
  if (!existsSync(LOADER_FILE)) throw new ImageSidecarConfigError(`the loader file is missing at ${LOADER_FILE}; is the package built?`)
  const deploymentId: string | undefined = config.deploymentId ?? process.env.NEXT_DEPLOYMENT_ID
  // The loader builds URLs as the app's own Next major does (15 and 16 differ in quality and dpl).
  const version = detectNextVersion(join(projectDir, 'package.json'))
  let nextMajor: NextMajor = 16
  try {
    if (version) nextMajor = majorOfVersion(version, 'next')
  } catch (err) {
    throw new ImageSidecarConfigError((err as Error).message)
  }
  return {
    ...config,
    images: { ...images, loader: 'default', loaderFile: loaderFile.startsWith('.') ? loaderFile : `./${loaderFile}` },
    // Bundled wherever the app's code is: the Pages Router otherwise loads node_modules unbundled at run
    // time, where the URL below is not set (getImagePlaceholder), and webpack imports the ESM-only
    // @noble/hashes there asynchronously, so the loader is no function when a page prerenders.
    transpilePackages: [...new Set([...(config.transpilePackages ?? []), ...BUNDLED])],
    // Only what Next does not hand its default loader: the optimizer path (with basePath and
    // trailingSlash), qualities and dangerouslyAllowSVG come from Next's own images config.
    env: {
      ...config.env,
      NEXT_IMAGE_SIDECAR_URL: origin,
      NEXT_IMAGE_SIDECAR_NEXT_MAJOR: String(nextMajor),
      ...(deploymentId ? { NEXT_IMAGE_SIDECAR_DEPLOYMENT_ID: deploymentId } : {}),
    },
  }
}

/**
 * Wires the sidecar into a next.config: sets `images.loaderFile` to this package's loader while
 * keeping `images.loader` at 'default' (so Next's own /_next/image stays up as the fallback),
 * and bakes the sidecar URL (and the deployment id) into the bundles through `env`.
 * With no sidecar URL configured, returns the config untouched.
 *
 * @example
 * // next.config.mjs
 * import { withImageSidecar } from 'next-image-sidecar-loader'
 * export default withImageSidecar({ images: { qualities: [60, 75] } })
 */
export function withImageSidecar(nextConfig: NextConfigFunction, options?: ImageSidecarOptions): NextConfigFunction
export function withImageSidecar(nextConfig: NextConfigObject, options?: ImageSidecarOptions): NextConfigObject
export function withImageSidecar(nextConfig: NextConfigObject | NextConfigFunction, options: ImageSidecarOptions = {}): NextConfigObject | NextConfigFunction {
  const origin = resolveSidecarUrl(options.url)
  if (origin === '') return nextConfig
  const projectDir = resolve(options.projectDir ?? process.cwd())
  if (typeof nextConfig === 'function') {
    return async (phase, context) => apply(await nextConfig(phase, context), origin, projectDir)
  }
  return apply(nextConfig, origin, projectDir)
}

export default withImageSidecar
