/** getImagePlaceholder's pure parts: the endpoint URL, its signature, the sidecar URL it picks, the result it shapes. */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { createRequire } from 'node:module'
import {
  failedPlaceholder,
  getImagePlaceholder,
  parsePlaceholderAnswer,
  placeholderOf,
  placeholderSignature,
  placeholderUrl,
  resolvePlaceholderSidecarUrl,
} from '../../loader/src/placeholder-core.js'

/** The sidecar's check, as sidecar/server/signature.ts computes signatures (node:crypto, over the decoded value). */
const sidecarSignature = (key: string, src: string) => createHmac('sha256', key).update(`placeholder\n${src}`).digest('base64url')

describe('the endpoint URL', () => {
  test('a relative src is encoded into `url` on the sidecar’s /_sidecar/placeholder', () => {
    assert.equal(placeholderUrl('http://127.0.0.1:3001', '/shop/photos/a b.jpg'), 'http://127.0.0.1:3001/_sidecar/placeholder?url=%2Fshop%2Fphotos%2Fa%20b.jpg')
  })
  test('an absolute src with its own query is encoded whole, so its & and = stay inside `url`', () => {
    const url = placeholderUrl('http://img.internal', 'https://cms.example.com/a.jpg?w=1&v=2')
    assert.equal(url, 'http://img.internal/_sidecar/placeholder?url=https%3A%2F%2Fcms.example.com%2Fa.jpg%3Fw%3D1%26v%3D2')
    assert.equal(new URL(url).searchParams.get('url'), 'https://cms.example.com/a.jpg?w=1&v=2')
  })
  test('a sidecar URL with a path prefix keeps it', () => {
    assert.equal(placeholderUrl('https://gw.example.com/img', '/a.png'), 'https://gw.example.com/img/_sidecar/placeholder?url=%2Fa.png')
  })
  test('with a key, `s` is the HMAC the sidecar computes over "placeholder\\n" + the decoded src', () => {
    for (const src of ['/a.png', 'https://cms.example.com/ü/a.jpg?x=1&y=2', '/a b+c.jpg']) {
      const url = new URL(placeholderUrl('http://s', src, 'k3y-ü'))
      assert.equal(url.searchParams.get('url'), src)
      assert.equal(url.searchParams.get('s'), sidecarSignature('k3y-ü', src))
    }
  })
  test('the signature differs from an image URL’s for the same src (a signed image URL cannot be replayed here)', () => {
    const image = createHmac('sha256', 'k').update('/a.png\n640\n75').digest('base64url')
    assert.notEqual(placeholderSignature('k', '/a.png'), image)
  })
  test('without a key there is no `s`', () => {
    assert.equal(new URL(placeholderUrl('http://s', '/a.png')).searchParams.has('s'), false)
  })
})

describe('which sidecar URL it asks', () => {
  const env = { IMAGE_SIDECAR_INTERNAL_URL: 'http://sidecar:3001', IMAGE_SIDECAR_URL: 'https://img.example.com' }
  test('the option first', () => assert.equal(resolvePlaceholderSidecarUrl('http://opt/', env, 'https://baked'), 'http://opt'))
  test('then IMAGE_SIDECAR_INTERNAL_URL', () => assert.equal(resolvePlaceholderSidecarUrl(undefined, env, 'https://baked'), 'http://sidecar:3001'))
  test('then the URL withImageSidecar baked in', () => assert.equal(resolvePlaceholderSidecarUrl(undefined, { IMAGE_SIDECAR_URL: 'https://img.example.com' }, 'https://baked/p/'), 'https://baked/p'))
  test('then IMAGE_SIDECAR_URL', () => assert.equal(resolvePlaceholderSidecarUrl(undefined, { IMAGE_SIDECAR_URL: 'https://img.example.com/' }, undefined), 'https://img.example.com'))
  test('empty values count as unset', () => assert.equal(resolvePlaceholderSidecarUrl('', { IMAGE_SIDECAR_INTERNAL_URL: '', IMAGE_SIDECAR_URL: '' }, ''), ''))
})

describe('the answer it accepts', () => {
  const blur = { src: '/a.jpg', width: 4000, height: 3000, blurDataURL: 'data:image/jpeg;base64,/9j/', blurWidth: 8, blurHeight: 6 }
  test('a StaticImageData with a blur', () => {
    assert.deepEqual(parsePlaceholderAnswer(blur), { width: 4000, height: 3000, blurDataURL: 'data:image/jpeg;base64,/9j/', blurWidth: 8, blurHeight: 6 })
  })
  test('a size without a blur (GIF, SVG, animated): blurWidth and blurHeight 0', () => {
    assert.deepEqual(parsePlaceholderAnswer({ src: '/a.gif', width: 320, height: 200, blurWidth: 0, blurHeight: 0 }), { width: 320, height: 200, blurWidth: 0, blurHeight: 0 })
  })
  for (const [what, body] of [
    ['not an object', 'hello'],
    ['null', null],
    ['no width', { height: 3 }],
    ['a zero height', { width: 3, height: 0 }],
    ['a fractional width', { width: 3.5, height: 2 }],
    ['a width as a string', { width: '3', height: 2 }],
    ['a blur that is no data: image URL', { ...blur, blurDataURL: 'https://x/y.jpg' }],
    ['a blur without its size', { ...blur, blurWidth: 0 }],
  ] as const) {
    test(`refuses ${what}`, () => assert.equal(parsePlaceholderAnswer(body), undefined))
  }
})

describe('the result', () => {
  test('with a blur: the src given, the size, the blur and placeholder "blur"', () => {
    assert.deepEqual(placeholderOf('https://cms.example.com/a.jpg', { width: 3000, height: 4000, blurDataURL: 'data:image/jpeg;base64,AA', blurWidth: 6, blurHeight: 8 }), {
      src: 'https://cms.example.com/a.jpg',
      width: 3000,
      height: 4000,
      blurDataURL: 'data:image/jpeg;base64,AA',
      blurWidth: 6,
      blurHeight: 8,
      placeholder: 'blur',
    })
  })
  test('without a blur: placeholder "empty", no blurDataURL key', () => {
    const result = placeholderOf('/a.gif', { width: 320, height: 200, blurWidth: 0, blurHeight: 0 })
    assert.equal(result.placeholder, 'empty')
    assert.equal('blurDataURL' in result, false)
  })
  test('a failure with a fallback carries its size, so <Image src={result}> still renders', () => {
    assert.deepEqual(failedPlaceholder('/a.jpg', { reason: 'timeout', message: 'm' }, { width: 1200, height: 800 }), {
      src: '/a.jpg',
      width: 1200,
      height: 800,
      placeholder: 'empty',
      error: { reason: 'timeout', message: 'm' },
    })
  })
  test('a failure without a fallback has no size', () => {
    const result = failedPlaceholder('/a.jpg', { reason: 'unavailable', message: 'm' })
    assert.equal('width' in result || 'height' in result, false)
  })
})

describe('with no sidecar configured', () => {
  const names = ['IMAGE_SIDECAR_INTERNAL_URL', 'NEXT_IMAGE_SIDECAR_URL', 'IMAGE_SIDECAR_URL'] as const
  test('answers not-configured with the fallback, without a warning or a request', async (t) => {
    const saved = names.map((name) => [name, process.env[name]] as const)
    for (const name of names) delete process.env[name]
    const warn = t.mock.method(console, 'warn', () => {})
    const fetchCalls = t.mock.method(globalThis, 'fetch')
    try {
      const result = await getImagePlaceholder('/a.jpg', { fallback: { width: 10, height: 20 } })
      assert.deepEqual(result, { src: '/a.jpg', width: 10, height: 20, placeholder: 'empty', error: { reason: 'not-configured', message: 'no sidecar URL is configured' } })
      assert.equal(warn.mock.callCount(), 0)
      assert.equal(fetchCalls.mock.callCount(), 0)
    } finally {
      for (const [name, value] of saved) if (value !== undefined) process.env[name] = value
    }
  })
})

describe('inside Next’s rendering', () => {
  // Next patches fetch: when a Cache Components prerender ends, the fetches it started reject with its
  // HangingPromiseRejectionError; a page turning dynamic or a redirect throws its own errors. These are
  // Next's control flow, not a sidecar failure: they must reach Next, and nothing is logged.
  const require = createRequire(import.meta.url)
  test('the rejection Next gives a fetch when a Cache Components prerender ends is rethrown as is, without a warning', async (t) => {
    // Next's patched fetch returns this hanging promise during a prerender; ending the prerender rejects it.
    const { makeDynamicHangingPromise } = require('next/dist/server/dynamic-rendering-utils.js') as {
      makeDynamicHangingPromise: (signal: AbortSignal, route: string, expression: string) => Promise<Response>
    }
    const prerender = new AbortController()
    const warn = t.mock.method(console, 'warn', () => {})
    t.mock.method(globalThis, 'fetch', () => makeDynamicHangingPromise(prerender.signal, '/photos', 'fetch()'))
    const result = getImagePlaceholder('/a.jpg', { sidecarUrl: 'http://127.0.0.1:9', fallback: { width: 10, height: 20 } })
    prerender.abort()
    await assert.rejects(result, (err: { digest?: string }) => err.digest === 'HANGING_PROMISE_REJECTION')
    assert.equal(warn.mock.callCount(), 0)
  })
  test('Next’s dynamic bail-out thrown by fetch is rethrown as is, without a warning', async (t) => {
    const { DynamicServerError } = require('next/dist/client/components/hooks-server-context.js') as { DynamicServerError: new (description: string) => Error }
    const error = new DynamicServerError('no-store fetch')
    const warn = t.mock.method(console, 'warn', () => {})
    t.mock.method(globalThis, 'fetch', () => Promise.reject(error))
    await assert.rejects(getImagePlaceholder('/a.jpg', { sidecarUrl: 'http://127.0.0.1:9', fallback: { width: 10, height: 20 } }), (err) => err === error)
    assert.equal(warn.mock.callCount(), 0)
  })
  test('a real network failure still resolves to the fallback with one warning', async (t) => {
    const warn = t.mock.method(console, 'warn', () => {})
    t.mock.method(globalThis, 'fetch', () => Promise.reject(Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } })))
    const result = await getImagePlaceholder('/a.jpg', { sidecarUrl: 'http://127.0.0.1:9', fallback: { width: 10, height: 20 } })
    assert.deepEqual(result.error, { reason: 'unavailable', message: 'the sidecar cannot be reached: ECONNREFUSED' })
    assert.equal(warn.mock.callCount(), 1)
  })
})
