import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { parseQuery, validateParams } from '../../sidecar/next/validate.js'
import { resolveNextConfig } from '../../sidecar/next/images-config.js'
import { ImageError } from '../../sidecar/errors.js'

const defaults = resolveNextConfig({})
const custom = resolveNextConfig({
  basePath: '/shop',
  images: {
    deviceSizes: [640, 1080],
    imageSizes: [64, 399],
    qualities: [50, 75, 100],
    remotePatterns: [{ protocol: 'https', hostname: 'images.example.com', pathname: '/photos/**' }],
    domains: ['legacy.example.com'],
  },
})

function message(search: string, config = defaults): string {
  try {
    validateParams(parseQuery(search), config)
  } catch (err) {
    assert.ok(err instanceof ImageError)
    assert.equal(err.statusCode, 400)
    return err.message
  }
  assert.fail(`expected ${search} to be rejected`)
}

describe('validateParams: Next 16 messages in Next order', () => {
  test('missing url', () => assert.equal(message('w=384&q=75'), '"url" parameter is required'))
  test('empty url', () => assert.equal(message('url=&w=384&q=75'), '"url" parameter is required'))
  test('repeated url', () => assert.equal(message('url=/a.png&url=/b.png&w=384&q=75'), '"url" parameter cannot be an array'))
  test('url of 3073 characters is too long', () =>
    assert.equal(message(`url=/${'a'.repeat(3072)}&w=384&q=75`), '"url" parameter is too long'))
  test('url of exactly 3072 characters is accepted', () => {
    const params = validateParams(parseQuery(`url=/${'a'.repeat(3071)}&w=384&q=75`), defaults)
    assert.equal(params.href.length, 3072)
  })
  test('protocol-relative url', () =>
    assert.equal(message('url=//evil.com/a.png&w=384&q=75'), '"url" parameter cannot be a protocol-relative URL (//)'))
  test('recursive url', () => assert.equal(message('url=/_next/image&w=384&q=75'), '"url" parameter cannot be recursive'))
  test('recursive url below /_next/image/', () =>
    assert.equal(message('url=%2F_next%2Fimage%2Fx.png&w=384&q=75'), '"url" parameter cannot be recursive'))
  test('percent-encoded recursive url', () =>
    assert.equal(message('url=%2F%255Fnext%252Fimage&w=384&q=75'), '"url" parameter cannot be recursive'))
  test('a path that only starts like /_next/image is not recursive', () => {
    assert.equal(validateParams(parseQuery('url=/_next/imagefoo.png&w=384&q=75'), defaults).href, '/_next/imagefoo.png')
  })
  test('malformed percent-encoding in a relative url is a 400, not a crash', () =>
    assert.equal(message('url=%2F%25E0%25A4%25A&w=384&q=75'), '"url" parameter has a malformed percent-encoding'))
  test('local url with a query string is not allowed by the default localPatterns', () =>
    assert.equal(message('url=%2Ftest.png%3Fv%3D1&w=384&q=75'), '"url" parameter is not allowed'))
  test('absolute url that does not parse is invalid', () => assert.equal(message('url=test.png&w=384&q=75'), '"url" parameter is invalid'))
  test('absolute url with a non-http protocol is invalid', () =>
    assert.equal(message('url=ftp://images.example.com/photos/a.png&w=640&q=75', custom), '"url" parameter is invalid'))
  test('absolute url without a matching remote pattern is not allowed', () =>
    assert.equal(message('url=https://other.example.com/a.png&w=640&q=75', custom), '"url" parameter is not allowed'))
  test('no remote image is allowed by default', () =>
    assert.equal(message('url=https://images.example.com/photos/a.png&w=384&q=75'), '"url" parameter is not allowed'))
  test('missing w', () => assert.equal(message('url=/a.png&q=75'), '"w" parameter (width) is required'))
  test('repeated w', () => assert.equal(message('url=/a.png&w=384&w=384&q=75'), '"w" parameter (width) cannot be an array'))
  for (const w of ['-1', '99.9', '+384', 'abc', '1e3']) {
    test(`w=${w} is not an integer`, () =>
      assert.equal(message(`url=/a.png&w=${encodeURIComponent(w)}&q=75`), '"w" parameter (width) must be an integer greater than 0'))
  }
  test('missing q', () => assert.equal(message('url=/a.png&w=384'), '"q" parameter (quality) is required'))
  test('repeated q', () => assert.equal(message('url=/a.png&w=384&q=75&q=75'), '"q" parameter (quality) cannot be an array'))
  test('q that is not an integer', () => assert.equal(message('url=/a.png&w=384&q=7.5'), '"q" parameter (quality) must be an integer between 1 and 100'))
  test('w and q regexes are checked before the width allowlist', () =>
    assert.equal(message('url=/a.png&w=385&q=x'), '"q" parameter (quality) must be an integer between 1 and 100'))
  test('w=0 is not greater than 0', () => assert.equal(message('url=/a.png&w=0&q=75'), '"w" parameter (width) must be an integer greater than 0'))
  test('w=000 is not greater than 0', () => assert.equal(message('url=/a.png&w=000&q=75'), '"w" parameter (width) must be an integer greater than 0'))
  test('width outside the allowlist names the parsed width', () =>
    assert.equal(message('url=/a.png&w=01000&q=75'), '"w" parameter (width) of 1000 is not allowed'))
  test('q=0 is out of range', () => assert.equal(message('url=/a.png&w=384&q=0'), '"q" parameter (quality) must be an integer between 1 and 100'))
  test('q=101 is out of range', () => assert.equal(message('url=/a.png&w=384&q=101'), '"q" parameter (quality) must be an integer between 1 and 100'))
  test('quality outside the allowlist names the raw q', () =>
    assert.equal(message('url=/a.png&w=384&q=080'), '"q" parameter (quality) of 080 is not allowed'))
  test('the width is checked before the quality', () =>
    assert.equal(message('url=/a.png&w=1000&q=80'), '"w" parameter (width) of 1000 is not allowed'))
})

describe('validateParams: accepted requests', () => {
  test('leading zeros are accepted and parsed', () => {
    const p = validateParams(parseQuery('url=/a.png&w=0384&q=075'), defaults)
    assert.deepEqual([p.width, p.quality], [384, 75])
  })
  test('relative href is kept verbatim', () => {
    const p = validateParams(parseQuery('url=%2Fimg%2Fa%20b.png&w=384&q=75'), defaults)
    assert.equal(p.href, '/img/a b.png')
    assert.equal(p.isAbsolute, false)
  })
  test('absolute href is normalised by URL', () => {
    const p = validateParams(parseQuery('url=https://IMAGES.example.com/photos/a%20b.png&w=640&q=50'), custom)
    assert.equal(p.href, 'https://images.example.com/photos/a%20b.png')
    assert.equal(p.isAbsolute, true)
  })
  test('images.domains allows a host', () => {
    assert.equal(validateParams(parseQuery('url=http://legacy.example.com/x.png&w=399&q=100'), custom).isAbsolute, true)
  })
  test('static media under basePath is static', () => {
    assert.equal(validateParams(parseQuery('url=/shop/_next/static/media/a.123.png&w=640&q=75'), custom).isStatic, true)
    assert.equal(validateParams(parseQuery('url=/shop/_next/static/immutable/media/a.png&w=640&q=75'), custom).isStatic, true)
    assert.equal(validateParams(parseQuery('url=/_next/static/media/a.123.png&w=640&q=75'), custom).isStatic, false)
  })
  test('extra parameters are ignored', () => {
    assert.equal(validateParams(parseQuery('url=/a.png&w=384&q=75&dpl=abc'), defaults).width, 384)
  })
})
