import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import { imagesInHtml, isOptimizable, parseOptimizerUrl, projectImages, sitemapPages, srcsetUrls, variantsOf } from '../../sidecar/warm-sources.js'
import { planVariants } from '../../sidecar/warm.js'
import { resolveNextConfig } from '../../sidecar/images-config.js'

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
  test('srcset candidates split on comma and space', () => {
    assert.deepEqual(srcsetUrls('/a?x=1,2 1x, /b 2x'), ['/a?x=1,2', '/b'])
  })
  test('sitemap <loc> entries, entities decoded', () => {
    assert.deepEqual(sitemapPages('<urlset><url><loc> https://a.test/x?y=1&amp;z=2 </loc></url><url><loc>https://a.test/</loc></url></urlset>'), ['https://a.test/x?y=1&z=2', 'https://a.test/'])
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
})
