/**
 * Choosing the Next line: the version the app's `next` package reports, refused when unsupported,
 * and what the 15 profile changes in the resolved config (its schema, defaults and the sidecar's
 * own switches). Behaviour per line is checked against Next's code in next-oracle and next-parity.
 */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { resolveNextConfig, resolveSidecarConfig } from '../../sidecar/next/images-config.js'
import { detectNextVersion, lineOfVersion, majorOfVersion, parseNextVersion, PROFILES } from '../../sidecar/next/next-version.js'
import { ConfigError } from '../../sidecar/errors.js'
import { NEXT_LINES, NEXT_PACKAGES, REPO } from '../helpers/next-app.js'

describe('the Next version decides the profile', () => {
  test('16.x is the 16 profile', () => assert.equal(majorOfVersion('16.4.6', 'x'), 16))
  test('15.5.x is the 15 profile', () => assert.equal(majorOfVersion('15.5.29', 'x'), 15))
  test('a 15.5 prerelease is the 15 profile', () => assert.equal(majorOfVersion('15.5.0-canary.3', 'x'), 15))
  test('15.4 is refused, naming 15.5 and the flag', () => assert.throws(() => majorOfVersion('15.4.7', 'x'), (err: Error) => err instanceof ConfigError && /15\.5/.test(err.message) && /--next-version 15/.test(err.message)))
  test('14 is refused', () => assert.throws(() => majorOfVersion('14.2.3', 'x'), /Next\.js 14\.2\.3 is not supported/))
  test('17 is refused', () => assert.throws(() => majorOfVersion('17.0.0', 'x'), /not supported/))
  test('a version that is not one is refused', () => assert.throws(() => majorOfVersion('latest', 'x'), /cannot read a Next\.js version/))
  test('16.5.x and later 16 minors are the 16.5 line', () => {
    for (const v of ['16.5.0', '16.5.3', '16.6.0', '16.5.0-canary.2']) assert.equal(lineOfVersion(v, 'x'), '16.5', v)
  })
  test('16.0–16.4 keep the 16.4 line', () => {
    for (const v of ['16.0.0', '16.3.1', '16.4.6', '16.4.99']) assert.equal(lineOfVersion(v, 'x'), '16.4', v)
  })
  test('15.5.x is the 15.5 line', () => assert.equal(lineOfVersion('15.5.29', 'x'), '15.5'))
  test('the lines reproduce 16.5.0, 16.4.6 and 15.5.29', () => {
    assert.deepEqual([PROFILES['16.5'].reference, PROFILES['16.4'].reference, PROFILES['15.5'].reference], ['16.5.0', '16.4.6', '15.5.29'])
  })
  test('--next-version takes a major: its newest line', () => {
    assert.equal(parseNextVersion('15', '--next-version'), '15.5')
    assert.equal(parseNextVersion('16', '--next-version'), '16.5')
  })
  test('--next-version takes a line', () => {
    assert.equal(parseNextVersion('16.4', '--next-version'), '16.4')
    assert.equal(parseNextVersion('16.5', '--next-version'), '16.5')
    assert.equal(parseNextVersion('15.5', '--next-version'), '15.5')
  })
  test('--next-version takes a full version', () => {
    assert.equal(parseNextVersion('16.0.1', '--next-version'), '16.4')
    assert.equal(parseNextVersion('16.5.0', '--next-version'), '16.5')
  })
  test('--next-version refuses 15.4 as a line', () => assert.throws(() => parseNextVersion('15.4', '--next-version'), /15\.5/))
  test('--next-version refuses an unknown major with the flag’s name', () => assert.throws(() => parseNextVersion('13', '--next-version'), /--next-version: .*expected 15, 16, 16\.4 or 16\.5/))
})

describe('detecting the next package the config file resolves', () => {
  test('the example app resolves the root’s Next 16.5', () => {
    assert.match(detectNextVersion(join(REPO, 'example-next-app/next.config.mjs')) ?? '', /^16\.5\./)
  })
  test('an app whose node_modules/next is Next 16.4 is detected as 16.4.6', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-next164-'))
    mkdirSync(join(dir, 'node_modules'))
    symlinkSync(NEXT_LINES['16.4'], join(dir, 'node_modules/next'), 'dir')
    writeFileSync(join(dir, 'next.config.mjs'), 'export default {}')
    assert.equal(lineOfVersion(detectNextVersion(join(dir, 'next.config.mjs'))!, 'x'), '16.4')
  })
  test('an app whose node_modules/next is Next 15 is detected as 15', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-next15-'))
    mkdirSync(join(dir, 'node_modules'))
    symlinkSync(NEXT_PACKAGES[15], join(dir, 'node_modules/next'), 'dir')
    writeFileSync(join(dir, 'next.config.mjs'), 'export default {}')
    assert.match(detectNextVersion(join(dir, 'next.config.mjs')) ?? '', /^15\.5\./)
  })
  test('a config with no next installed beside it detects nothing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-nonext-'))
    writeFileSync(join(dir, 'next.config.mjs'), 'export default {}')
    assert.equal(detectNextVersion(join(dir, 'next.config.mjs')), undefined)
  })
})

describe('the 15 profile resolves a config as Next 15.5 does', () => {
  const as15 = (config: Record<string, unknown>) => resolveNextConfig(config, 'next.config', PROFILES['15.5'])
  test('images.dangerouslyAllowLocalIP is not a Next 15 key', () => {
    assert.throws(() => as15({ images: { dangerouslyAllowLocalIP: true } }), (err: Error) => err instanceof ConfigError && /Next\.js 15/.test(err.message) && /dangerouslyAllowLocalIP/.test(err.message))
  })
  test('images.maximumRedirects is not a Next 15 key', () => assert.throws(() => as15({ images: { maximumRedirects: 2 } }), /maximumRedirects/))
  test('width 16 is a default size', () => assert.ok(as15({}).images.imageSizes.includes(16)))
  test('without qualities any quality is allowed', () => assert.equal(as15({}).images.qualities, undefined))
  test('the default minimumCacheTTL is 60 s', () => assert.equal(as15({}).images.minimumCacheTTL, 60))
  test('without localPatterns every local path and query is allowed', () => assert.equal(as15({}).images.localPatterns, undefined))
  test('user localPatterns gain only /_next/static/media', () => {
    assert.deepEqual(as15({ images: { localPatterns: [{ pathname: '/img/**' }] } }).images.localPatterns, [{ pathname: '/img/**' }, { pathname: '/_next/static/media/**', search: '' }])
  })
  test('fetch’s 20 redirects are followed', () => assert.equal(as15({}).images.maximumRedirects, 20))
  test('the private-IP guard stays on', () => assert.equal(as15({}).images.dangerouslyAllowLocalIP, false))
  test('imgOptMozjpeg is ignored, as Next 15 ignores it', () => assert.equal(as15({ experimental: { imgOptMozjpeg: false } }).sharp.mozjpeg, true))
})

describe('the sidecar’s own switches', () => {
  test('--dangerously-allow-local-ip lifts the guard on Next 15', () => {
    assert.equal(resolveSidecarConfig({ nextVersion: 15, dangerouslyAllowLocalIP: true }).images.dangerouslyAllowLocalIP, true)
  })
  test('on Next 16 the config key alone lifts it too', () => {
    assert.equal(resolveSidecarConfig({ nextConfig: { images: { dangerouslyAllowLocalIP: true } } }).images.dangerouslyAllowLocalIP, true)
  })
  test('--maximum-redirects overrides the line’s limit', () => {
    assert.equal(resolveSidecarConfig({ nextVersion: 15, maximumRedirects: 3 }).images.maximumRedirects, 3)
  })
  test('--maximum-redirects above 20 is refused', () => assert.throws(() => resolveSidecarConfig({ maximumRedirects: 21 }), /maximumRedirects/))
  test('the default line is 16.5', () => assert.equal(resolveSidecarConfig({}).profile.line, '16.5'))
  test('nextVersion 16 is the 16.5 line, 16.4 is kept when asked', () => {
    assert.equal(resolveSidecarConfig({ nextVersion: 16 }).profile.line, '16.5')
    assert.equal(resolveSidecarConfig({ nextVersion: '16.4' }).profile.line, '16.4')
  })
  test('imgOptSafeMode: true, { nextImage: true } turn safe mode on; { nextImage: false }, {} and 16.4 leave it off', () => {
    const safe = (experimental: unknown, nextVersion: '16.5' | '16.4' = '16.5') => resolveSidecarConfig({ nextVersion, nextConfig: { experimental: { imgOptSafeMode: experimental } } }).safeMode
    assert.deepEqual([safe(true), safe({ nextImage: true }), safe({ nextImage: false }), safe({}), safe(true, '16.4')], [true, true, false, false, false])
  })
  test('imgOptSafeMode of another shape is refused as Next’s schema refuses it', () => {
    assert.throws(() => resolveSidecarConfig({ nextConfig: { experimental: { imgOptSafeMode: { nextImage: true, other: 1 } } } }), /imgOptSafeMode/)
  })
})
