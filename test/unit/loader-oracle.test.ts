/**
 * Next as the oracle for the loader, for each line (16.5, 16.4 and 15.5: 15's default loader differs in
 * quality and `dpl`; 16.5 and 16.4 build the same URLs, and the loader serves both as major 16). Next's `getImgProps` — what `next/image` renders and its
 * exported `getImageProps` returns — renders a generated matrix of <Image> props under several
 * configs (resolved by Next's own loadConfig), once with Next's default loader, and once with the
 * sidecar's loader in its place, as `images.loaderFile` installs it (with and without a sidecar URL).
 * Everything must agree — what is optimized, src, srcSet widths and descriptors, sizes, every other
 * prop and Next's errors — except that optimizer URLs point at the sidecar origin; with no sidecar
 * URL, everything is identical.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createImageLoader } from '../../loader/src/loader.js'
import { NEXT_LINES, type NextLine } from '../helpers/next-app.js'

const require = createRequire(import.meta.url)
const sharedLib = (line: NextLine) => dirname(require.resolve(join(NEXT_LINES[line], 'dist/shared/lib/get-img-props.js')))
const loadConfig = (line: NextLine) => require(join(NEXT_LINES[line], 'dist/server/config.js')).default as (phase: string, dir: string, opts: object) => Promise<any>

type Props = Record<string, unknown>
interface NextImage {
  getImgProps(props: Props, state: object): { props: Props; meta: Props }
  defaultLoader: (p: never) => string
  /** What next/image makes of `__NEXT_IMAGE_OPTS` (Next 15 hands it to getImgProps as it is). */
  prepareImageConfig(opts?: object): Props & { path: string }
}

/**
 * Next's image modules as a server built with this deployment id runs them: NEXT_DEPLOYMENT_ID is
 * set (Next reads it when its deployment-id module loads, and again for asset tokens), and each
 * id gets fresh copies of the modules. Restore the environment with the returned function.
 */
function loadNextImage(major: NextLine, deploymentId: string | undefined): NextImage & { restore(): void } {
  const lib = sharedLib(major)
  for (const key of Object.keys(require.cache)) if (key.startsWith(lib)) delete require.cache[key]
  const saved = process.env.NEXT_DEPLOYMENT_ID
  if (deploymentId) process.env.NEXT_DEPLOYMENT_ID = deploymentId
  else delete process.env.NEXT_DEPLOYMENT_ID
  return {
    getImgProps: require(join(lib, 'get-img-props.js')).getImgProps,
    defaultLoader: require(join(lib, 'image-loader.js')).default,
    prepareImageConfig: require(join(lib, 'image-config.js')).prepareImageConfig ?? ((opts?: Props) => ({ ...require(join(lib, 'image-config.js')).imageConfigDefault, ...opts })),
    restore: () => {
      if (saved === undefined) delete process.env.NEXT_DEPLOYMENT_ID
      else process.env.NEXT_DEPLOYMENT_ID = saved
    },
  }
}

/** The next.config variants; each is resolved by Next's loadConfig. */
const CONFIGS: Record<string, Props> = {
  default: {},
  qualities: { images: { qualities: [50, 75, 90], deviceSizes: [480, 1024, 2048], imageSizes: [16, 64, 200] } },
  'basePath + trailingSlash': { basePath: '/shop', trailingSlash: true, images: { qualities: [40, 80] } },
  dangerouslyAllowSVG: { images: { dangerouslyAllowSVG: true, contentSecurityPolicy: "default-src 'self'; script-src 'none'; sandbox;" } },
  deploymentId: { deploymentId: 'dep-123', images: { qualities: [60, 75] } },
}

const STATIC_PHOTO = { src: '/_next/static/media/hero.0123abcd.jpg', width: 1600, height: 900, blurDataURL: 'data:image/jpeg;base64,/9j/2wBDAAYEBQY=', blurWidth: 8, blurHeight: 5 }
const STATIC_SVG = { src: '/_next/static/media/logo.4567ef01.svg', width: 160, height: 40 }
const SOURCES: unknown[] = [
  '/photos/dawn.jpg',
  '/photos/dawn.jpg?v=1',
  '/photos/dawn.jpg?dpl=own',
  '/logo.svg',
  '/LOGO.SVG',
  '/logo.svg?v=1',
  '/icons/logo.svg#mark',
  'https://cdn.example.com/photos/a.png',
  'https://cdn.example.com/logo.svg',
  'data:image/png;base64,iVBORw0KGgo=',
  'blob:https://app.example.com/6f1c2b7e',
  '/_next/static/immutable/x.png',
  STATIC_PHOTO,
  STATIC_SVG,
]
const SIZING: Props[] = [{}, { width: 160, height: 40 }, { width: 1200, height: 800, sizes: '50vw' }, { fill: true, sizes: '100vw' }, { fill: true, sizes: '(max-width: 768px) 100vw, 33vw' }, { fill: true }]
const QUALITIES = [undefined, 75, 80, 150, 1]
const LOADING: Props[] = [{}, { loading: 'eager' }, { preload: true }]

function* matrix(): Generator<Props> {
  for (const src of SOURCES)
    for (const sizing of SIZING)
      for (const quality of QUALITIES)
        for (const unoptimized of [false, true])
          for (const loading of LOADING) yield { alt: '', src, ...sizing, ...(quality === undefined ? {} : { quality }), ...(unoptimized ? { unoptimized } : {}), ...loading }
}

type Rendered = { props: Props; meta: Props } | { error: string }
function render(next: NextImage, loader: (p: never) => string, imgConf: object, props: Props): Rendered {
  try {
    const { props: out, meta } = next.getImgProps({ ...props }, { defaultLoader: loader, imgConf, blurComplete: false, showAltText: false })
    return { props: out, meta }
  } catch (err) {
    return { error: (err as Error).message }
  }
}

/** Next's rendering with every optimizer URL (`${path}?…`) moved to the sidecar origin. */
function atOrigin(rendered: Rendered, path: string, origin: string): Rendered {
  if ('error' in rendered) return rendered
  const move = (url: string) => (url.startsWith(`${path}?`) ? origin + url : url)
  const props = { ...rendered.props }
  if (typeof props.src === 'string') props.src = move(props.src)
  if (typeof props.srcSet === 'string') {
    props.srcSet = props.srcSet
      .split(', ')
      .map((entry) => {
        const space = entry.lastIndexOf(' ')
        return move(entry.slice(0, space)) + entry.slice(space)
      })
      .join(', ')
  }
  return { props, meta: rendered.meta }
}

const ORIGIN = 'https://img.example.com'

for (const major of ['16.5', '16.4', '15.5'] as NextLine[])
describe(`Next ${major}: the loader renders every <Image> as Next’s default loader does (Next’s getImgProps as the oracle)`, () => {
  const savedEnv = process.env.NODE_ENV
  before(() => {
    // `next build` output: production rendering (no dev-only warnings and checks).
    ;(process.env as Record<string, string>).NODE_ENV = 'production'
  })
  after(() => {
    ;(process.env as Record<string, string | undefined>).NODE_ENV = savedEnv
  })
  let total = 0
  for (const [name, userConfig] of Object.entries(CONFIGS)) {
    test(`${name}: identical without a sidecar URL, only the origin differs with one`, async (t) => {
      const resolved = await loadConfig(major)('phase-production-build', mkdtempSync(join(tmpdir(), 'nis-loader-oracle-')), { customConfig: userConfig, silent: true })
      const deploymentId: string | undefined = resolved.deploymentId || undefined
      const next = loadNextImage(major, deploymentId)
      t.after(next.restore)
      // What `next build` puts into process.env.__NEXT_IMAGE_OPTS (build/define-env.js), prepared as next/image does.
      const { deviceSizes, imageSizes, qualities, path, loader, dangerouslyAllowSVG, unoptimized } = resolved.images
      const imgConf = next.prepareImageConfig({ deviceSizes, imageSizes, qualities, path, loader, dangerouslyAllowSVG, unoptimized })
      const sidecar = createImageLoader({ origin: ORIGIN, deploymentId, nextMajor: major === '15.5' ? 15 : 16 })
      const fallback = createImageLoader({ origin: '', deploymentId, nextMajor: major === '15.5' ? 15 : 16 })
      let optimized = 0
      let asIs = 0
      for (const props of matrix()) {
        const theirs = render(next, next.defaultLoader, imgConf, props)
        const label = JSON.stringify(props)
        assert.deepEqual(render(next, fallback, imgConf, props), theirs, `without a sidecar URL: ${label}`)
        assert.deepEqual(render(next, sidecar, imgConf, props), atOrigin(theirs, imgConf.path, ORIGIN), `with a sidecar URL: ${label}`)
        if ('error' in theirs) continue
        if (theirs.meta.unoptimized) asIs++
        else optimized++
        total++
      }
      // The matrix reaches both outcomes: optimized, and served as it is.
      assert.ok(optimized > 500 && asIs > 500, `optimized ${optimized}, as-is ${asIs}`)
    })
  }
  test('the matrix has thousands of combinations', () => {
    assert.ok(total >= 10_000, `${total} combinations`)
  })
})

describe('decisions Next takes only for its default loader hold with the sidecar’s', () => {
  const next = loadNextImage('16.5', undefined)
  next.restore()
  const imgConf = next.prepareImageConfig() // Next's defaults
  const sidecar = createImageLoader({ origin: ORIGIN, deploymentId: undefined })
  const rendered = (props: Props) => next.getImgProps({ alt: '', ...props }, { defaultLoader: sidecar, imgConf, blurComplete: false, showAltText: false })
  test('an SVG is served as it is, with no srcSet', () => {
    const { props, meta } = rendered({ src: '/logo.svg', width: 160, height: 40 })
    assert.equal(props.src, '/logo.svg')
    assert.equal(props.srcSet, undefined)
    assert.equal(meta.unoptimized, true)
  })
  test('a photo goes to the sidecar', () => {
    const { props } = rendered({ src: '/photos/dawn.jpg', width: 160, height: 40 })
    assert.equal(props.src, `${ORIGIN}/_next/image?url=%2Fphotos%2Fdawn.jpg&w=384&q=75`)
  })
})
