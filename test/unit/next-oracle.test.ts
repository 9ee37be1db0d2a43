/**
 * Differential tests: each pure rule of the sidecar against the same rule in the installed
 * `next` (16.5.0, the root's), and config normalisation, validateParams, negotiation and getMaxAge
 * against each line the sidecar serves: 16.5 (the root), 16.4.6 (test/next16-4) and 15.5.29
 * (test/next15), each under its own profile. Next's own modules are the oracle here; nothing is
 * hard-coded from observation.
 */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import { parseQuery, validateParams } from '../../sidecar/next/validate.js'
import { negotiableFormats, resolveNextConfig } from '../../sidecar/next/images-config.js'
import { PROFILES, type NextLine } from '../../sidecar/next/next-version.js'
import { NEXT_LINES } from '../helpers/next-app.js'
import { negotiateMimeType } from '../../sidecar/next/negotiate.js'
import { detectContentType, isAnimated } from '../../sidecar/image/detect.js'
import { isPrivateIp } from '../../sidecar/upstream/private-ip.js'
import { cacheKey } from '../../sidecar/cache/key.js'
import { contentDispositionHeader, getMaxAge, isNotModified } from '../../sidecar/next/headers.js'
import { extractEtag } from '../../sidecar/next/etag.js'
import { ImageError } from '../../sidecar/errors.js'
import { CORPUS, corpusFile } from '../helpers/upstream-server.js'

const require = createRequire(import.meta.url)
const next = {
  loadConfig: require('next/dist/server/config.js').default as (phase: string, dir: string, opts: object) => Promise<any>,
  optimizer: require('next/dist/server/image-optimizer.js'),
  detect: require('next/dist/server/image-optimizer/detect-content-type.js').detectContentType as (b: Buffer) => Promise<string | null>,
  isAnimated: require('next/dist/compiled/is-animated/index.js') as (b: Buffer) => boolean,
  isPrivateIp: require('next/dist/server/is-private-ip.js').isPrivateIp as (ip: string) => boolean,
  getMaxAge: require('next/dist/server/image-optimizer/get-max-age.js').getMaxAge as (s: string) => number,
  extractEtag: require('next/dist/server/image-optimizer/extract-etag.js').extractEtag as (e: string | undefined, b: Buffer) => string,
  contentDisposition: require('next/dist/compiled/content-disposition/index.js') as (name: string, o: object) => string,
  fresh: require('next/dist/compiled/fresh/index.js') as (h: object, r: object) => boolean,
  getExtension: require('next/dist/server/serve-static.js').getExtension as (t: string) => string,
}

type Oracle = {
  loadConfig: (phase: string, dir: string, opts: object) => Promise<any>
  validateParams: (req: object, query: object, config: object, dev: boolean) => any
  /** 16.x has get-max-age.js; 15.5 keeps getMaxAge in image-optimizer.js. */
  getMaxAge: (s: string) => number
}
const LINES: NextLine[] = ['16.5', '16.4', '15.5']
/** What each Next line's own code decides: its loadConfig, its validateParams (with negotiation), its getMaxAge. */
const oracles = Object.fromEntries(
  LINES.map((line) => {
    const at = (path: string) => require(join(NEXT_LINES[line], path))
    const optimizer = at('dist/server/image-optimizer.js')
    const getMaxAge = line === '15.5' ? optimizer.getMaxAge : at('dist/server/image-optimizer/get-max-age.js').getMaxAge
    return [line, { loadConfig: at('dist/server/config.js').default, validateParams: optimizer.ImageOptimizerCache.validateParams, getMaxAge }]
  }),
) as Record<NextLine, Oracle>

// Functions, because a config holds URL objects that structuredClone would flatten.
const userConfigs: Record<string, () => Record<string, unknown>> = {
  default: () => ({}),
  custom: () => ({
    basePath: '/shop',
    assetPrefix: 'https://cdn.example.com',
    images: {
      deviceSizes: [399, 1080],
      imageSizes: [64, 256],
      qualities: [50, 75, 100],
      formats: ['image/avif', 'image/webp'],
      localPatterns: [{ pathname: '/shop/img/**', search: '' }, { pathname: '/api/**' }],
      remotePatterns: [
        { protocol: 'https', hostname: '*.example.com', pathname: '/photos/**' },
        { hostname: '**.cdn.test', port: '8443' },
        new URL('http://exact.test/only/this.png?v=1'),
      ],
      domains: ['legacy.test'],
      minimumCacheTTL: 60,
    },
  }),
}

/** Next's loadConfig caches per directory, so every oracle config gets its own. */
function loadNextOracle(customConfig: Record<string, unknown>, major: NextLine = '16.5'): Promise<any> {
  const dir = mkdtempSync(join(tmpdir(), 'nis-oracle-'))
  return oracles[major].loadConfig('phase-production-server', dir, { customConfig, silent: true })
}

const nextConfigs = new Map<string, any>()
async function nextConfig(name: string, major: NextLine = '16.5') {
  const key = `${major}:${name}`
  if (!nextConfigs.has(key)) {
    nextConfigs.set(key, await loadNextOracle(userConfigs[name]!(), major))
  }
  return nextConfigs.get(key)
}

for (const major of LINES) {
  describe(`Next ${major}: config normalisation matches next loadConfig`, () => {
    for (const name of Object.keys(userConfigs)) {
      test(`${name} config`, async () => {
        const theirs = await nextConfig(name, major)
        const ours = resolveNextConfig(userConfigs[name]!(), 'next.config', PROFILES[major])
        assert.equal(ours.basePath, theirs.basePath)
        // Next 15 has no dangerouslyAllowLocalIP and no maximumRedirects (see the profile).
        const only16 = ['dangerouslyAllowLocalIP', 'maximumRedirects'] as const
        for (const key of ['deviceSizes', 'imageSizes', 'qualities', 'formats', 'minimumCacheTTL', 'dangerouslyAllowSVG', 'contentSecurityPolicy', 'contentDispositionType', 'maximumResponseBody', 'localPatterns', 'domains', 'unoptimized', 'loader', ...(major !== '15.5' ? only16 : [])] as const) {
          assert.deepEqual(ours.images[key], theirs.images[key], key)
        }
        // Next keeps explicit `undefined` keys on normalised patterns; compare what is set.
        const defined = (p: object) => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined))
        assert.deepEqual(ours.images.remotePatterns.map(defined), theirs.images.remotePatterns.map(defined))
        assert.equal(ours.sharp.maxInputPixels, theirs.experimental.imgOptMaxInputPixels)
        assert.equal(ours.sharp.timeoutInSeconds, theirs.experimental.imgOptTimeoutInSeconds)
        if (major !== '15.5') assert.equal(ours.sharp.mozjpeg, theirs.experimental.imgOptMozjpeg)
        if (major === '16.5') assert.equal(ours.safeMode, theirs.experimental.imgOptSafeMode.nextImage)
      })
    }
  })
}

const urls = [
  '', '/test.png', '/test.png?v=1', '/test.png?', '/shop/img/a.jpg', '/shop/img/a.jpg?x=1', '/api/img', '/api/img?id=3',
  '/_next/image', '/_next/image/', '/_next/imagex', '/%5Fnext/image', '/%255Fnext%252Fimage', '//evil.com/x.png', '/a b.png',
  '/.hidden/x.png', '/shop/_next/static/media/x.123.png', '/_next/static/media/x.png', '/shop/_next/static/immutable/media/x.png',
  'test.png', 'ftp://a.example.com/photos/x.png', 'https://a.example.com/photos/x.png', 'https://a.b.example.com/photos/x.png',
  'http://a.example.com/photos/x.png', 'https://a.example.com/other/x.png', 'https://x.cdn.test:8443/a.png', 'https://a.b.cdn.test:8443/a',
  'https://x.cdn.test/a.png', 'http://exact.test/only/this.png?v=1', 'http://exact.test/only/this.png', 'http://legacy.test/x',
  'https://cdn.example.com/_next/static/media/a.png', 'https://LEGACY.test/x', 'data:image/png;base64,AAAA', 'http://[::1]/x.png',
  `/${'x'.repeat(3071)}`, `/${'x'.repeat(3072)}`,
]
const widths = ['', '16', '384', '399', '1080', '64', '0', '000', '-1', '1.5', '0399', '1000', 'x']
const qualities = ['', '75', '50', '100', '80', '0', '101', '075', 'q', '1']

function ourOutcome(search: string, config: ReturnType<typeof resolveNextConfig>, accept: string) {
  try {
    const p = validateParams(parseQuery(search), config)
    return { ...p, mimeType: negotiateMimeType(negotiableFormats(config), accept, config.profile.noFormatsNoType) }
  } catch (err) {
    if (err instanceof ImageError) return { errorMessage: err.message }
    throw err
  }
}

for (const major of LINES)
describe(`Next ${major}: validateParams matches ImageOptimizerCache.validateParams`, () => {
  for (const name of Object.keys(userConfigs)) {
    test(`${name} config: ${urls.length * widths.length * qualities.length} queries`, async () => {
      const theirsConfig = await nextConfig(name, major)
      const ours = resolveNextConfig(userConfigs[name]!(), 'next.config', PROFILES[major])
      let compared = 0
      for (const url of urls) {
        for (const w of widths) {
          for (const q of qualities) {
            const search = `url=${encodeURIComponent(url)}&w=${w}&q=${q}`
            const accept = 'image/avif,image/webp,*/*'
            const theirs = oracles[major].validateParams({ headers: { accept } }, parseQuery(search), theirsConfig, false)
            const mine = ourOutcome(search, ours, accept)
            if ('errorMessage' in theirs) {
              assert.deepEqual(mine, { errorMessage: theirs.errorMessage }, search)
            } else {
              const { href, isAbsolute, isStatic, width, quality, mimeType } = theirs
              assert.deepEqual(mine, { href, isAbsolute, isStatic, width, quality, mimeType }, search)
            }
            compared++
          }
        }
      }
      assert.equal(compared, urls.length * widths.length * qualities.length)
    })
  }
})

for (const major of LINES)
describe(`Next ${major}: Accept negotiation matches getSupportedMimeType`, () => {
  const accepts = [
    undefined, '', '*/*', 'image/*', 'image/webp', 'image/avif', 'image/avif,image/webp', 'image/webp,image/avif',
    'image/webp,*/*', 'image/avif,image/webp,image/apng,image/*,*/*;q=0.8', 'IMAGE/WEBP', 'image/webp;q=0', 'image/webp;q=0.5,image/avif;q=0.4',
    'image/png', 'image/invalid', 'text/html,application/xhtml+xml', 'image/jxl,image/avif;q=0.9,image/webp;q=0.9',
  ]
  // No formats at all (16.5: no type; before: the client's first preference), and 16.5's safe mode,
  // whose format filter drops AVIF (true, { nextImage: true }; { nextImage: false } and {} leave it).
  const safeModes: Array<Record<string, unknown>> = major === '16.5' ? [{}, { imgOptSafeMode: true }, { imgOptSafeMode: { nextImage: true } }, { imgOptSafeMode: { nextImage: false } }, { imgOptSafeMode: {} }] : [{}]
  for (const experimental of safeModes) {
    for (const formats of [['image/webp'], ['image/avif', 'image/webp'], ['image/webp', 'image/avif'], ['image/avif'], []]) {
      for (const accept of accepts) {
        test(`formats ${formats.join('+') || 'none'}${experimental.imgOptSafeMode !== undefined ? `, imgOptSafeMode ${JSON.stringify(experimental.imgOptSafeMode)}` : ''} / Accept ${JSON.stringify(accept)}`, async () => {
          const userConfig = { images: { formats }, experimental }
          const config = await loadNextOracle(userConfig, major)
          const theirs = oracles[major].validateParams({ headers: { accept } }, { url: '/a.png', w: '384', q: '75' }, config, false)
          const ours = resolveNextConfig(userConfig, 'next.config', PROFILES[major])
          assert.equal(negotiateMimeType(negotiableFormats(ours), accept, ours.profile.noFormatsNoType), theirs.mimeType)
        })
      }
    }
  }
})

describe('cache key: one per variant, where Next\'s getCacheKey collides', () => {
  // Next hashes href, width and quality back to back: these pairs share a key in Next.
  const collisions = [
    [{ href: '/banner.png?v=120', width: 48, quality: 75, mimeType: 'image/webp' }, { href: '/banner.png?v=1', width: 2048, quality: 75, mimeType: 'image/webp' }],
    [{ href: '/a.png', width: 1, quality: 75, mimeType: 'image/webp' }, { href: '/a.png1', width: 7, quality: 5, mimeType: 'image/webp' }],
  ]
  for (const [a, b] of collisions) {
    test(`${a!.href} w=${a!.width} and ${b!.href} w=${b!.width} get distinct keys`, () => {
      const nextKey = next.optimizer.ImageOptimizerCache.getCacheKey
      assert.equal(nextKey(a), nextKey(b), 'the pair collides in Next')
      assert.notEqual(cacheKey(a!.href, a!.width, a!.quality, a!.mimeType, 16), cacheKey(b!.href, b!.width, b!.quality, b!.mimeType, 16))
    })
  }

  test('the Next line is part of the key (the bytes depend on it)', () => {
    assert.notEqual(cacheKey('/a.png', 64, 75, 'image/webp', 15), cacheKey('/a.png', 64, 75, 'image/webp', 16))
  })

  test('the negotiated type is part of the key', () => {
    assert.notEqual(cacheKey('/a.png', 64, 75, 'image/webp', 16), cacheKey('/a.png', 64, 75, 'image/avif', 16))
  })
})

describe('type detection matches detectContentType and is-animated on every corpus file', () => {
  const files = readdirSync(CORPUS, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile() && !d.name.endsWith('.md'))
    .map((d) => join(d.parentPath, d.name).slice(CORPUS.length + 1))
  for (const file of files) {
    test(file, async () => {
      const buffer = corpusFile(file)
      const type = detectContentType(buffer)
      assert.equal(type, await next.detect(buffer))
      if (type === 'image/gif' || type === 'image/png' || type === 'image/webp') assert.equal(isAnimated(buffer), next.isAnimated(buffer))
    })
  }
  const crafted: Record<string, Buffer> = {
    'svg after whitespace': Buffer.from('  \n<svg xmlns="http://www.w3.org/2000/svg"></svg>'),
    'svg after a comment': Buffer.from('<!-- hi --><svg xmlns="http://www.w3.org/2000/svg" width="1"></svg>'),
    'big-endian tiff': Buffer.from([0x4d, 0x4d, 0x00, 0x2a, 0, 0, 0, 8, 0, 0]),
    'ftyp text trick': Buffer.from('<!--ftypavif--><svg></svg>'),
    'pdf': Buffer.from('%PDF-1.7\n'),
    'html': Buffer.from('<!doctype html><html></html>'),
    'jxl codestream': Buffer.from([0xff, 0x0a, 0, 0]),
    'empty': Buffer.alloc(0),
  }
  for (const [name, buffer] of Object.entries(crafted)) {
    test(name, async () => assert.equal(detectContentType(buffer), await next.detect(buffer)))
  }
})

describe('private IP classification matches isPrivateIp', () => {
  const ips = [
    '127.0.0.1', '127.0.0.2', '10.1.2.3', '172.16.0.1', '172.32.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0',
    '255.255.255.255', '224.0.0.1', '192.0.2.1', '198.18.0.1', '8.8.8.8', '1.1.1.1', '::1', '::', 'fc00::1', 'fe80::1',
    '::ffff:127.0.0.1', '::ffff:8.8.8.8', '2001:db8::1', '2002::1', '2001::1', '64:ff9b::1', '2606:4700::1111', '[::1]', 'not-an-ip',
  ]
  for (const ip of ips) test(ip, () => assert.equal(isPrivateIp(ip), next.isPrivateIp(ip)))
})

describe('header rules match Next', () => {
  const cacheControls = [
    '', 'max-age=60', 's-maxage=100000, max-age=5', 'public, max-age="120"', 'MAX-AGE=30', 'no-store', 'max-age=abc', 'max-age=10, s-maxage=',
    // Around 16.5's cap of 2^31 s.
    'max-age=2147483647', 'max-age=2147483648', 'max-age=2147483649', 'max-age=4294967296', 's-maxage=99999999999999, max-age=5', 'max-age="3000000000"', 'max-age=1e12',
  ]
  for (const line of LINES) {
    for (const cc of cacheControls) {
      test(`Next ${line}: getMaxAge(${JSON.stringify(cc)})`, () => assert.equal(getMaxAge(cc, PROFILES[line].maxDeltaSeconds), oracles[line].getMaxAge(cc)))
    }
  }

  test('extractEtag from a header and from the body', () => {
    const body = Buffer.from('abc')
    assert.equal(extractEtag('W/"aa-1a20deddb55"', body), next.extractEtag('W/"aa-1a20deddb55"', body))
    assert.equal(extractEtag(undefined, body), next.extractEtag(undefined, body))
  })

  const names: Array<[string, string]> = [
    ['/test.png', 'image/webp'], ['/test.jpg', 'image/jpeg'], ['/photo.final.png', 'image/webp'], ['/api/octet', 'image/webp'],
    ['/dir/', 'image/png'], ['/naïve café.png', 'image/avif'], ['/100%25.png', 'image/webp'], ['https://a.example.com/x%20y.gif?z=1', 'image/gif'],
    ['/icon.ico', 'image/x-icon'], ['/x.svg', 'image/svg+xml'], ['/"quoted".png', 'image/png'],
  ]
  for (const [href, type] of names) {
    for (const disposition of ['attachment', 'inline'] as const) {
      test(`Content-Disposition for ${href} as ${type} (${disposition})`, () => {
        // Next's getFileNameWithExtension, then its bundled content-disposition.
        const [path = ''] = href.split('?', 1)
        const segment = path.split('/').pop()
        const fileName = segment ? `${segment.split('.', 1)[0]}.${next.getExtension(type)}` : 'image.bin'
        assert.equal(contentDispositionHeader(href, type, disposition), next.contentDisposition(fileName, { type: disposition }))
      })
    }
  }

  const conditionals: Array<Record<string, string>> = [
    {}, { 'if-none-match': 'abc' }, { 'if-none-match': 'W/abc' }, { 'if-none-match': '"abc"' }, { 'if-none-match': 'x, abc' },
    { 'if-none-match': '*' }, { 'if-none-match': 'abc', 'cache-control': 'no-cache' }, { 'if-none-match': 'abd' },
    { 'if-modified-since': 'Wed, 21 Oct 2015 07:28:00 GMT' },
  ]
  for (const headers of conditionals) {
    test(`304 decision for ${JSON.stringify(headers)}`, () => assert.equal(isNotModified(headers, 'abc'), next.fresh(headers, { etag: 'abc' })))
  }
})

describe('the private-address rule over DNS answers (pure: nothing connects)', async () => {
  const { assertPublicAddresses } = await import('../../sidecar/upstream/external.js')
  test('a public answer first and a private one second is refused', () => {
    assert.throws(
      () => assertPublicAddresses('http://a.test/x.png', [{ address: '93.184.216.34', family: 4 }, { address: '169.254.169.254', family: 4 }]),
      (err: unknown) => err instanceof ImageError && err.statusCode === 400 && err.message === '"url" parameter is not allowed',
    )
  })
  test('a private IPv6 answer behind a public IPv4 one is refused', () => {
    assert.throws(() => assertPublicAddresses('http://a.test/', [{ address: '93.184.216.34', family: 4 }, { address: 'fd00::1', family: 6 }]), ImageError)
  })
  test('all-public answers pass', () => {
    assert.doesNotThrow(() => assertPublicAddresses('http://a.test/', [{ address: '93.184.216.34', family: 4 }, { address: '2606:2800:220:1::1', family: 6 }]))
  })
})
