import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import { gzipSync } from 'node:zlib'
import { decodeSitemap, imagesInHtml, isOptimizable, parseOptimizerUrl, parseSitemap, projectImages, srcsetUrls, variantsOf } from '../../sidecar/cli/warm-sources.js'
import { planPlaceholders, planVariants } from '../../sidecar/cli/warm.js'
import { createHmac } from 'node:crypto'
import { signImageParams } from '../../sidecar/server/signature.js'
import { resolveNextConfig } from '../../sidecar/next/images-config.js'

describe('finding the optimizer URLs a page will request', () => {
  const html = `<html><head>
    <link rel="preload" as="image" imageSrcSet="/_next/image?url=%2Fhero.jpg&amp;w=640&amp;q=75 640w, /_next/image?url=%2Fhero.jpg&amp;w=1080&amp;q=75 1080w" imageSizes="100vw">
    </head><body>
    <img src="https://img.example.com/_next/image?url=%2Fa.jpg&amp;w=384&amp;q=75" srcSet="https://img.example.com/_next/image?url=%2Fa.jpg&amp;w=256&amp;q=75 1x, https://img.example.com/_next/image?url=%2Fa.jpg&amp;w=384&amp;q=75 2x">
    <picture><source srcset="/_next/image?url=https%3A%2F%2Fcdn.test%2Fb%2Cc.png&amp;w=64&amp;q=50 1x"><img src="/plain.png"></picture>
    <img src="/_next/image?url=%2Fno-width.png&amp;q=75">
  </body></html>`
  test('img src and srcset, picture sources and preload imagesrcset', () => {
    assert.deepEqual(imagesInHtml(html, 'https://www.example.com/page', ''), [
      { url: '/hero.jpg', w: '640', q: '75' },
      { url: '/hero.jpg', w: '1080', q: '75' },
      { url: '/a.jpg', w: '384', q: '75' },
      { url: '/a.jpg', w: '256', q: '75' },
      { url: '/a.jpg', w: '384', q: '75' },
      { url: 'https://cdn.test/b,c.png', w: '64', q: '50' },
    ])
  })
  test('under a basePath only {basePath}/_next/image counts', () => {
    assert.deepEqual(parseOptimizerUrl('/shop/_next/image?url=%2Fx.png&w=64&q=75', 'http://n', '/shop'), { url: '/x.png', w: '64', q: '75' })
    assert.equal(parseOptimizerUrl('/_next/image?url=%2Fx.png&w=64&q=75', 'http://n', '/shop'), undefined)
  })
  test('with trailingSlash, Next emits {basePath}/_next/image/?…, which counts too', () => {
    assert.deepEqual(parseOptimizerUrl('/_next/image/?url=%2Fx.png&w=64&q=75', 'http://n', ''), { url: '/x.png', w: '64', q: '75' })
    assert.deepEqual(parseOptimizerUrl('/shop/_next/image/?url=%2Fx.png&w=64&q=75', 'http://n', '/shop'), { url: '/x.png', w: '64', q: '75' })
    assert.deepEqual(imagesInHtml('<img src="/_next/image/?url=%2Fx.png&amp;w=64&amp;q=75">', 'https://a.test/p/', ''), [{ url: '/x.png', w: '64', q: '75' }])
  })
  test('a signature found in a page is kept with its request', () => {
    assert.deepEqual(parseOptimizerUrl('/_next/image?url=%2Fx.png&w=64&q=75&s=abc-_', 'http://n', ''), { url: '/x.png', w: '64', q: '75', s: 'abc-_' })
  })
  test('srcset candidates split on comma and space', () => {
    assert.deepEqual(srcsetUrls('/a?x=1,2 1x, /b 2x'), ['/a?x=1,2', '/b'])
  })
})

describe('reading a sitemap', () => {
  test('a urlset: its <loc> entries are pages, entities decoded', () => {
    assert.deepEqual(parseSitemap('<urlset><url><loc> https://a.test/x?y=1&amp;z=2 </loc></url><url><loc>https://a.test/</loc></url></urlset>'), {
      kind: 'urlset',
      locs: ['https://a.test/x?y=1&z=2', 'https://a.test/'],
    })
  })
  test('a sitemap index (next-sitemap’s default): its <loc> entries are sitemaps', () => {
    const xml = `<?xml version="1.0" encoding="UTF-8"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<sitemap><loc>https://a.test/sitemap-0.xml</loc></sitemap>
<sitemap><loc>https://a.test/sitemap-1.xml.gz</loc><lastmod>2025-01-01</lastmod></sitemap>
</sitemapindex>`
    assert.deepEqual(parseSitemap(xml), { kind: 'index', locs: ['https://a.test/sitemap-0.xml', 'https://a.test/sitemap-1.xml.gz'] })
  })
  test('CDATA <loc> entries', () => {
    assert.deepEqual(parseSitemap('<urlset><url><loc><![CDATA[https://a.test/a?b=1&c=2]]></loc></url></urlset>').locs, ['https://a.test/a?b=1&c=2'])
  })
  test('image-sitemap <image:loc> entries are not pages', () => {
    const xml = '<urlset xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"><url><loc>https://a.test/p</loc><image:image><image:loc>https://a.test/i.jpg</image:loc></image:image></url></urlset>'
    assert.deepEqual(parseSitemap(xml).locs, ['https://a.test/p'])
  })
  test('a gzipped body is unpacked, a plain one read as it is', () => {
    const xml = '<urlset><url><loc>https://a.test/</loc></url></urlset>'
    assert.equal(decodeSitemap(gzipSync(xml), 1024), xml)
    assert.equal(decodeSitemap(Buffer.from(xml), 1024), xml)
  })
  test('a gzipped body that unpacks beyond the cap is refused', () => {
    assert.throws(() => decodeSitemap(gzipSync(Buffer.alloc(10_000, 'a')), 1024), /larger than 1024 bytes/)
  })
})

describe('a project directory', () => {
  test('public images and built static media, at every width and quality', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-project-'))
    mkdirSync(join(dir, 'public/img/sub dir'), { recursive: true })
    mkdirSync(join(dir, '.next/static/media'), { recursive: true })
    writeFileSync(join(dir, 'public/img/sub dir/a b.jpg'), 'x')
    writeFileSync(join(dir, 'public/robots.txt'), 'x')
    writeFileSync(join(dir, '.next/static/media/hero.1234.png'), 'x')
    const config = resolveNextConfig({ basePath: '/shop', images: { deviceSizes: [640], imageSizes: [64], qualities: [50, 75] } })
    assert.deepEqual(projectImages(dir, config), [
      { url: '/shop/img/sub dir/a b.jpg', w: '64', q: '50' },
      { url: '/shop/img/sub dir/a b.jpg', w: '64', q: '75' },
      { url: '/shop/img/sub dir/a b.jpg', w: '640', q: '50' },
      { url: '/shop/img/sub dir/a b.jpg', w: '640', q: '75' },
      { url: '/shop/_next/static/media/hero.1234.png', w: '64', q: '50' },
      { url: '/shop/_next/static/media/hero.1234.png', w: '64', q: '75' },
      { url: '/shop/_next/static/media/hero.1234.png', w: '640', q: '50' },
      { url: '/shop/_next/static/media/hero.1234.png', w: '640', q: '75' },
    ])
  })
})

describe('a project directory with broken links', () => {
  const config = resolveNextConfig({ images: { deviceSizes: [640], imageSizes: [], qualities: [75] } })
  test('a dangling symlink under public/ is skipped and reported', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-project-dangling-'))
    mkdirSync(join(dir, 'public'))
    writeFileSync(join(dir, 'public/a.jpg'), 'x')
    symlinkSync(join(dir, 'public/gone.jpg'), join(dir, 'public/dangling.jpg'))
    const skipped: string[] = []
    assert.deepEqual(projectImages(dir, config, '.next', (m) => skipped.push(m)).map((r) => r.url), ['/a.jpg'])
    assert.equal(skipped.length, 1)
    assert.match(skipped[0]!, /dangling\.jpg/)
  })
  test('a symlink pointing at itself is skipped and reported', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-project-selfloop-'))
    mkdirSync(join(dir, 'public'))
    writeFileSync(join(dir, 'public/a.jpg'), 'x')
    symlinkSync('loop.jpg', join(dir, 'public/loop.jpg'))
    const skipped: string[] = []
    assert.deepEqual(projectImages(dir, config, '.next', (m) => skipped.push(m)).map((r) => r.url), ['/a.jpg'])
    assert.match(skipped.join('\n'), /loop\.jpg/)
  })
  test('a directory symlink back to an ancestor is walked once', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-project-dirloop-'))
    mkdirSync(join(dir, 'public/img'), { recursive: true })
    writeFileSync(join(dir, 'public/img/a.jpg'), 'x')
    symlinkSync('..', join(dir, 'public/img/up'))
    const skipped: string[] = []
    assert.deepEqual(projectImages(dir, config, '.next', (m) => skipped.push(m)).map((r) => r.url), ['/img/a.jpg'])
    assert.match(skipped.join('\n'), /up/)
  })
})

describe('what a browser never asks the optimizer for is never warmed', () => {
  const plain = resolveNextConfig({ images: { deviceSizes: [640], imageSizes: [64] } })
  const svgAllowed = resolveNextConfig({ images: { deviceSizes: [640], imageSizes: [64], dangerouslyAllowSVG: true } })
  test('SVG files in public/ are skipped, unless dangerouslyAllowSVG', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nis-project-svg-'))
    mkdirSync(join(dir, 'public'), { recursive: true })
    writeFileSync(join(dir, 'public/logo.svg'), '<svg/>')
    assert.deepEqual(projectImages(dir, plain), [])
    assert.deepEqual(projectImages(dir, svgAllowed).map((r) => r.url), ['/logo.svg', '/logo.svg'])
  })
  // Next's getImgProps decides, for its default loader, what goes to the optimizer.
  const require = createRequire(import.meta.url)
  const { getImgProps } = require('next/dist/shared/lib/get-img-props.js')
  const nextLoader = require('next/dist/shared/lib/image-loader.js').default
  const { prepareImageConfig, imageConfigDefault } = require('next/dist/shared/lib/image-config.js')
  const srcs = ['/logo.svg', '/logo.svg?v=1', '/logo.svg#x', 'https://cdn.test/logo.svg', '/LOGO.SVG', '/logo.svg.png', '/a.svgz', 'data:image/png;base64,AAAA', 'blob:https://app.test/1', '/photo.jpg']
  for (const [name, config, dangerouslyAllowSVG] of [['default', plain, false], ['dangerouslyAllowSVG', svgAllowed, true]] as const) {
    for (const src of srcs) {
      test(`${name}: ${src} is warmed exactly when next/image sends it to the optimizer`, () => {
        const imgConf = prepareImageConfig({ ...imageConfigDefault, dangerouslyAllowSVG, remotePatterns: [{ hostname: 'cdn.test' }] })
        const { meta } = getImgProps({ src, width: 64, height: 64, alt: '' }, { defaultLoader: nextLoader, imgConf })
        assert.equal(isOptimizable(src, config), !meta.unoptimized)
        assert.equal(variantsOf(src, config).length > 0, !meta.unoptimized)
      })
    }
  }
})

describe('the plan', () => {
  test('every configured format plus the source-format fallback, at the live path', () => {
    const config = resolveNextConfig({ basePath: '/shop', images: { formats: ['image/avif', 'image/webp'] } })
    assert.deepEqual(planVariants([{ url: '/a b.png', w: '64', q: '75' }], config), [
      { path: '/shop/_next/image?url=%2Fa%20b.png&w=64&q=75', accept: 'image/avif', format: 'image/avif' },
      { path: '/shop/_next/image?url=%2Fa%20b.png&w=64&q=75', accept: 'image/webp', format: 'image/webp' },
      { path: '/shop/_next/image?url=%2Fa%20b.png&w=64&q=75', accept: '*/*', format: 'source' },
    ])
  })
  test('16.5 in imgOptSafeMode: no AVIF variant (Next offers none), the other formats as configured', () => {
    const config = resolveNextConfig({ images: { formats: ['image/avif', 'image/webp'] }, experimental: { imgOptSafeMode: true } })
    assert.deepEqual(planVariants([{ url: '/a.png', w: '64', q: '75' }], config).map((v) => v.format), ['image/webp', 'source'])
  })
  test('with a signing key every variant carries the signature the sidecar checks', () => {
    const config = resolveNextConfig({ images: { formats: ['image/webp'] } })
    const s = signImageParams('k3y', '/a b.png', '64', '75')
    assert.deepEqual(
      planVariants([{ url: '/a b.png', w: '64', q: '75', s: 'stale' }], config, 'k3y').map((v) => v.path),
      [`/_next/image?url=%2Fa%20b.png&w=64&q=75&s=${s}`, `/_next/image?url=%2Fa%20b.png&w=64&q=75&s=${s}`],
    )
  })
  test('without a key, a signature found in a page is sent as it was found', () => {
    const config = resolveNextConfig({ images: { formats: ['image/webp'] } })
    assert.deepEqual(planVariants([{ url: '/a.png', w: '64', q: '75', s: 'from-page' }], config)[0]!.path, '/_next/image?url=%2Fa.png&w=64&q=75&s=from-page')
  })
})

describe('the placeholder plan (--placeholders)', () => {
  const requests = [
    { url: '/shop/a b.png', w: '64', q: '75' },
    { url: '/shop/a b.png', w: '128', q: '75' },
    { url: 'https://cms.test/x.jpg?v=2', w: '64', q: '50' },
  ]
  test('one placeholder per distinct source, in order, without basePath before the endpoint', () => {
    assert.deepEqual(planPlaceholders(requests), [
      { source: '/shop/a b.png', path: '/_sidecar/placeholder?url=%2Fshop%2Fa%20b.png' },
      { source: 'https://cms.test/x.jpg?v=2', path: '/_sidecar/placeholder?url=https%3A%2F%2Fcms.test%2Fx.jpg%3Fv%3D2' },
    ])
  })
  test('with a signing key each carries base64url(HMAC-SHA256(key, "placeholder\\n" + url)) over the decoded url', () => {
    const s = createHmac('sha256', 'k3y').update('placeholder\n/shop/a b.png').digest('base64url')
    assert.equal(planPlaceholders(requests, 'k3y')[0]!.path, `/_sidecar/placeholder?url=%2Fshop%2Fa%20b.png&s=${encodeURIComponent(s)}`)
  })
  test('without a key, a signature found in a page is not sent (it signs w and q, not a placeholder)', () => {
    assert.deepEqual(planPlaceholders([{ url: '/a.png', w: '64', q: '75', s: 'from-page' }]), [{ source: '/a.png', path: '/_sidecar/placeholder?url=%2Fa.png' }])
  })
})
