import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { resolveNextConfig } from '../../sidecar/next/images-config.js'
import { findNextConfig, loadNextConfig } from '../../sidecar/next/next-config.js'
import { ConfigError } from '../../sidecar/errors.js'

function configError(userConfig: Record<string, unknown>): string {
  try {
    resolveNextConfig(userConfig)
  } catch (err) {
    assert.ok(err instanceof ConfigError)
    return err.message
  }
  assert.fail('expected a ConfigError')
}

describe('invalid next.config values fail at start, naming the key and the rule', () => {
  test('a device size above 10000', () => assert.match(configError({ images: { deviceSizes: [640, 20000] } }), /images\.deviceSizes\[1\]: .*10000/))
  test('a quality of 0', () => assert.match(configError({ images: { qualities: [0] } }), /images\.qualities\[0\]: .*1/))
  test('an empty qualities list', () => assert.match(configError({ images: { qualities: [] } }), /images\.qualities: .*1/))
  test('a format sharp cannot negotiate', () => assert.match(configError({ images: { formats: ['image/png'] } }), /images\.formats\[0\]/))
  test('maximumRedirects above 20', () => assert.match(configError({ images: { maximumRedirects: 21 } }), /images\.maximumRedirects: .*20/))
  test('a negative minimumCacheTTL', () => assert.match(configError({ images: { minimumCacheTTL: -1 } }), /images\.minimumCacheTTL/))
  test('an unknown images key', () => assert.match(configError({ images: { deviceSize: [1] } }), /images.*deviceSize/))
  test('a remote pattern without hostname', () => assert.match(configError({ images: { remotePatterns: [{ pathname: '/x/**' }] } }), /images\.remotePatterns\[0\]/))
  test('a basePath ending in /', () => assert.match(configError({ basePath: '/shop/' }), /basePath/))
  test('a non-default built-in loader without a path', () => assert.match(configError({ images: { loader: 'imgix' } }), /images\.loader/))
})

describe('Next’s defaults and normalisation', () => {
  test('defaults are Next 16’s', () => {
    const { images } = resolveNextConfig({})
    assert.deepEqual(images.qualities, [75])
    assert.deepEqual(images.imageSizes, [32, 48, 64, 96, 128, 256, 384])
    assert.equal(images.minimumCacheTTL, 14400)
    assert.equal(images.maximumRedirects, 3)
    assert.equal(images.maximumResponseBody, 50_000_000)
  })
  test('undefined localPatterns forbid query strings', () => {
    assert.deepEqual(resolveNextConfig({}).images.localPatterns, [{ pathname: '**', search: '' }])
  })
  test('user localPatterns gain the static media patterns', () => {
    assert.deepEqual(resolveNextConfig({ images: { localPatterns: [{ pathname: '/img/**' }] } }).images.localPatterns, [
      { pathname: '/img/**' },
      { pathname: '/_next/static/media/**', search: '' },
      { pathname: '/_next/static/immutable/media/**', search: '' },
    ])
  })
  test('an absolute assetPrefix is allowed as a remote pattern', () => {
    const { images } = resolveNextConfig({ assetPrefix: 'https://cdn.example.com:8443', images: { remotePatterns: [] } })
    assert.deepEqual(images.remotePatterns, [{ hostname: 'cdn.example.com', protocol: 'https', port: '8443' }])
  })
})

describe('loading next.config files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nis-config-'))
  const write = (name: string, text: string) => {
    const path = join(dir, name)
    writeFileSync(path, text)
    return path
  }
  test('an ES module object', async () => {
    const config = await loadNextConfig(write('a.mjs', 'export default { basePath: "/a", images: { qualities: [60] } }'))
    assert.deepEqual(config, { basePath: '/a', images: { qualities: [60] } })
  })
  test('a CommonJS module', async () => {
    const config = await loadNextConfig(write('b.cjs', 'module.exports = { images: { minimumCacheTTL: 5 } }'))
    assert.deepEqual(config, { images: { minimumCacheTTL: 5 } })
  })
  test('a function of the phase', async () => {
    const config = await loadNextConfig(write('c.mjs', 'export default async (phase) => ({ env: { phase } })'))
    assert.deepEqual(config, { env: { phase: 'phase-production-server' } })
  })
  test('TypeScript with a type import', async () => {
    const config = await loadNextConfig(
      write('d.ts', 'import type { NextConfig } from "next"\nconst config: NextConfig = { images: { qualities: [40, 80] } }\nexport default config\n'),
    )
    assert.deepEqual(config, { images: { qualities: [40, 80] } })
  })
  test('a missing file is a ConfigError', async () => {
    await assert.rejects(loadNextConfig(join(dir, 'nope.js')), ConfigError)
  })
  test('a file exporting a number is a ConfigError', async () => {
    await assert.rejects(loadNextConfig(write('e.mjs', 'export default 42')), /must export an object/)
  })
  test('findNextConfig finds next.config.mjs in a directory', () => {
    const path = write('next.config.mjs', 'export default {}')
    assert.equal(findNextConfig(dir), path)
  })
})
