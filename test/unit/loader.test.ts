import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildImageUrl, findClosestQuality } from '../../loader/src/loader.js'
import { withImageSidecar, resolveSidecarUrl, ImageSidecarConfigError } from '../../loader/dist/config.js'
import { NEXT_PACKAGES } from '../helpers/next-app.js'

const require = createRequire(import.meta.url)
const nextDefaultLoader = require('next/dist/shared/lib/image-loader.js').default as (p: object) => string
const nextFindClosestQuality = require('next/dist/shared/lib/find-closest-quality.js').findClosestQuality as (q: number | undefined, c: object) => number

describe('with no sidecar origin the loader emits exactly Next’s default loader URL', () => {
  const srcs = ['/photos/dawn.jpg', '/shop/_next/static/media/hero.abc.jpg', '/a b/ü.png', '/api/img?id=3&dpl=dep1', 'https://images.example.com/x.png?w=1', '/x.png?dpl=only']
  const configs = [
    { path: '/_next/image', qualities: [75] },
    { path: '/shop/_next/image', qualities: [50, 75, 90] },
    { path: '/_next/image/', qualities: [30, 60] },
  ]
  for (const config of configs) {
    for (const src of srcs) {
      for (const [width, quality] of [[64, undefined], [640, 90], [1080, 1], [3840, 62]] as const) {
        test(`${config.path} ${config.qualities.join(',')} ${src} w=${width} q=${quality}`, () => {
          const ours = buildImageUrl({ src, width, quality, config }, { origin: '', deploymentId: undefined })
          const theirs = nextDefaultLoader({ config, src, width, quality })
          assert.equal(ours, theirs)
        })
      }
    }
  }
})

describe('with a sidecar origin', () => {
  test('relative src goes to the sidecar origin with basePath and a snapped quality', () => {
    assert.equal(
      buildImageUrl({ src: '/shop/photos/a.jpg', width: 640, quality: 80, config: { path: '/shop/_next/image', qualities: [50, 75, 90] } }, { origin: 'https://img.example.com', deploymentId: undefined }),
      'https://img.example.com/shop/_next/image?url=%2Fshop%2Fphotos%2Fa.jpg&w=640&q=75',
    )
  })
  test('absolute src goes to the sidecar too', () => {
    assert.equal(
      buildImageUrl({ src: 'https://cdn.example.com/a.png', width: 64, config: { path: '/_next/image', qualities: [75] } }, { origin: 'http://127.0.0.1:3001', deploymentId: 'd1' }),
      'http://127.0.0.1:3001/_next/image?url=https%3A%2F%2Fcdn.example.com%2Fa.png&w=64&q=75',
    )
  })
  test('a deployment id is appended for relative src', () => {
    assert.equal(buildImageUrl({ src: '/a.png', width: 64, config: { path: '/_next/image', qualities: [75] } }, { origin: 'http://s', deploymentId: 'd1' }), 'http://s/_next/image?url=%2Fa.png&w=64&q=75&dpl=d1')
  })
  test('the default export carries Next’s default-loader mark, so Next decides SVG, data: and unoptimized for it', async () => {
    const loader = (await import('../../loader/src/loader.js')).default
    assert.equal(loader.__next_img_default, true)
  })
  for (const [q, list] of [[undefined, [75]], [80, [50, 75, 90]], [63, [50, 75]], [62, [50, 75]], [100, [10, 20]], [1, [60, 40]], [80, []]] as const) {
    test(`quality ${q} snaps to ${JSON.stringify(list)} as Next does`, () => {
      assert.equal(findClosestQuality(q, [...list]), nextFindClosestQuality(q, { qualities: [...list] }))
    })
  }
})

describe('withImageSidecar', () => {
  const projectDir = mkdtempSync(join(tmpdir(), 'nis-app-'))
  test('without a sidecar URL the config is returned untouched', () => {
    const config = { images: { qualities: [60] } }
    const saved = { a: process.env.IMAGE_SIDECAR_URL, b: process.env.NEXT_PUBLIC_IMAGE_SIDECAR_URL }
    delete process.env.IMAGE_SIDECAR_URL
    delete process.env.NEXT_PUBLIC_IMAGE_SIDECAR_URL
    try {
      assert.equal(withImageSidecar(config), config)
    } finally {
      if (saved.a !== undefined) process.env.IMAGE_SIDECAR_URL = saved.a
      if (saved.b !== undefined) process.env.NEXT_PUBLIC_IMAGE_SIDECAR_URL = saved.b
    }
  })
  test('with a URL it sets the loader file, keeps the default loader and bakes the URL and deployment id into env', () => {
    const config = withImageSidecar({ basePath: '/shop', deploymentId: 'dep-7', images: { qualities: [50, 90] }, env: { OTHER: '1' } }, { url: 'https://img.example.com/', projectDir })
    assert.equal(config.images.loader, 'default')
    assert.match(config.images.loaderFile, /^\.{1,2}\/.*loader\/dist\/loader\.js$/)
    assert.deepEqual(config.images.qualities, [50, 90])
    assert.deepEqual(config.env, { OTHER: '1', NEXT_IMAGE_SIDECAR_URL: 'https://img.example.com', NEXT_IMAGE_SIDECAR_NEXT_MAJOR: '16', NEXT_IMAGE_SIDECAR_DEPLOYMENT_ID: 'dep-7' })
  })
  test('with a URL it has Next bundle the package and @noble/hashes (so the Pages Router gets the URL in getImagePlaceholder, and webpack a synchronous loader), keeping the app\'s transpilePackages', () => {
    const config = withImageSidecar({ transpilePackages: ['ui-kit'] }, { url: 'https://img.example.com', projectDir })
    assert.deepEqual(config.transpilePackages, ['ui-kit', 'next-image-sidecar-loader', '@noble/hashes'])
    assert.deepEqual(withImageSidecar({}, { url: 'https://img.example.com', projectDir }).transpilePackages, ['next-image-sidecar-loader', '@noble/hashes'])
  })
  test('an app listing the package in serverExternalPackages is told to remove it (Next would refuse the build)', () => {
    assert.throws(() => withImageSidecar({ serverExternalPackages: ['sharp', 'next-image-sidecar-loader'] }, { url: 'https://img.example.com', projectDir }), /withImageSidecar: serverExternalPackages lists next-image-sidecar-loader; remove it/)
    assert.doesNotThrow(() => withImageSidecar({ serverExternalPackages: ['sharp'] }, { url: 'https://img.example.com', projectDir }))
  })
  test('a Next 15 project gets the Next 15 loader (the major of the next package it resolves)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-next15-project-'))
    mkdirSync(join(dir, 'node_modules'))
    symlinkSync(NEXT_PACKAGES[15], join(dir, 'node_modules/next'), 'dir')
    const config = withImageSidecar({}, { url: 'https://img.example.com', projectDir: dir })
    assert.equal(config.env.NEXT_IMAGE_SIDECAR_NEXT_MAJOR, '15')
  })
  test('a project on an unsupported Next is refused with the version', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-next14-project-'))
    mkdirSync(join(dir, 'node_modules/next'), { recursive: true })
    writeFileSync(join(dir, 'node_modules/next/package.json'), JSON.stringify({ name: 'next', version: '14.2.3' }))
    assert.throws(() => withImageSidecar({}, { url: 'https://img.example.com', projectDir: dir }), /withImageSidecar: .*14\.2\.3 is not supported/)
  })
  test('the loader file path resolves from the project directory', () => {
    const config = withImageSidecar({}, { url: 'http://127.0.0.1:3001', projectDir })
    assert.ok(require('node:fs').existsSync(join(projectDir, config.images.loaderFile)))
  })
  test('IMAGE_SIDECAR_URL wins over NEXT_PUBLIC_IMAGE_SIDECAR_URL', () => {
    assert.equal(resolveSidecarUrl(undefined, { IMAGE_SIDECAR_URL: 'http://a:1', NEXT_PUBLIC_IMAGE_SIDECAR_URL: 'http://b:2' }), 'http://a:1')
    assert.equal(resolveSidecarUrl(undefined, { NEXT_PUBLIC_IMAGE_SIDECAR_URL: 'http://b:2/img/' }), 'http://b:2/img')
  })
  test('a function config is wrapped and still receives the phase', async () => {
    const wrapped = withImageSidecar((phase: string) => ({ env: { PHASE: phase } }), { url: 'http://s:1', projectDir })
    const config = await wrapped('phase-production-build', { defaultConfig: {} })
    assert.equal(config.env.PHASE, 'phase-production-build')
    assert.equal(config.env.NEXT_IMAGE_SIDECAR_URL, 'http://s:1')
  })
  for (const [name, config, options, pattern] of [
    ['a relative URL', {}, { url: 'img.example.com' }, /absolute http\(s\) URL/],
    ['a non-http URL', {}, { url: 'ftp://img.example.com' }, /http or https/],
    ['a URL with a query', {}, { url: 'https://img.example.com/?x=1' }, /query/],
    ['a custom loader', { images: { loader: 'custom' } }, { url: 'http://s:1' }, /images\.loader/],
    ['an existing loaderFile', { images: { loaderFile: './my-loader.js' } }, { url: 'http://s:1' }, /loaderFile/],
    ['unoptimized images', { images: { unoptimized: true } }, { url: 'http://s:1' }, /unoptimized/],
  ] as const) {
    test(`rejects ${name} with a clear message`, () => {
      assert.throws(() => withImageSidecar(config as Record<string, any>, { ...options, projectDir }), (err: unknown) => err instanceof ImageSidecarConfigError && pattern.test(err.message))
    })
  }
})

describe('signed URLs', () => {
  const settings = { origin: 'http://s', deploymentId: undefined, signingKey: 'k3y' }
  const config = { path: '/_next/image', qualities: [50, 75] }
  test('the loader’s signature is the one the sidecar verifies', async () => {
    const { verifySignature } = await import('../../sidecar/server/signature.js')
    const { parseQuery } = await import('../../sidecar/next/validate.js')
    const url = buildImageUrl({ src: '/photos/a b.jpg?x=1', width: 640, quality: 70, config }, settings)
    assert.match(url, /&s=[A-Za-z0-9_-]{43}$/)
    assert.doesNotThrow(() => verifySignature('k3y', parseQuery(url.split('?').slice(1).join('?'))))
  })
  test('a changed width invalidates the signature', async () => {
    const { verifySignature } = await import('../../sidecar/server/signature.js')
    const { parseQuery } = await import('../../sidecar/next/validate.js')
    const url = buildImageUrl({ src: '/a.png', width: 640, config }, settings).replace('w=640', 'w=3840')
    assert.throws(() => verifySignature('k3y', parseQuery(url.split('?')[1]!)), /"s" parameter \(signature\) is invalid/)
  })
  test('without a key (or without a sidecar) no signature is added', () => {
    assert.doesNotMatch(buildImageUrl({ src: '/a.png', width: 640, config }, { ...settings, signingKey: undefined }), /&s=/)
    assert.doesNotMatch(buildImageUrl({ src: '/a.png', width: 640, config }, { ...settings, origin: '' }), /&s=/)
  })
})

describe('the frontend package stands alone', () => {
  const PACKAGE = join(import.meta.dirname, '../../loader')
  test('its sources import only node: built-ins, each other, @noble/hashes, server-only and (the helper) next/navigation (nothing of the server)', () => {
    const foreign: string[] = []
    for (const name of readdirSync(join(PACKAGE, 'src'))) {
      // `from '…'`, a bare `import '…'` (side effect only) and `import('…')`.
      for (const [, fromSpec, bareSpec, dynamicSpec] of readFileSync(join(PACKAGE, 'src', name), 'utf8').matchAll(/^(?:import|export)\b[^'\n]*\bfrom\s+'([^']+)'|^import\s+'([^']+)'|\bimport\(\s*'([^']+)'/gm)) {
        const spec = fromSpec ?? bareSpec ?? dynamicSpec!
        // The helper passes Next's own control flow on through Next's public unstable_rethrow (next is the peer:
        // the helper runs only inside a Next server); nothing the server imports (loader, config) reaches next.
        const peer = name === 'placeholder-core.ts' && spec === 'next/navigation.js'
        if (!peer && !/^(node:|\.\/[^/]+$|@noble\/hashes\/|server-only$)/.test(spec)) foreign.push(`${name} → ${spec}`)
      }
    }
    assert.deepEqual(foreign, [])
  })
  test('its manifest: no install scripts, `next` only as a peer, two small dependencies (hashing, the server-only marker)', () => {
    const manifest = JSON.parse(readFileSync(join(PACKAGE, 'package.json'), 'utf8'))
    assert.deepEqual(Object.keys(manifest.scripts ?? {}).filter((s) => /^(pre|post)?install$|^prepare$/.test(s)), [])
    assert.deepEqual(Object.keys(manifest.dependencies ?? {}).sort(), ['@noble/hashes', 'server-only'])
    assert.deepEqual(Object.keys(manifest.peerDependencies ?? {}), ['next'])
  })
  test('the server package’s /config and /loader subpaths are the frontend package’s', async () => {
    const [serverConfig, frontendConfig] = [await import('next-image-sidecar/config'), await import('next-image-sidecar-loader')]
    assert.equal(serverConfig.withImageSidecar, frontendConfig.withImageSidecar)
    const [serverLoader, frontendLoader] = [await import('next-image-sidecar/loader'), await import('next-image-sidecar-loader/loader')]
    assert.equal(serverLoader.default, frontendLoader.default)
  })
})
