/** --cache-key-ignore-params: which query parameters of an absolute source leave its cache key. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { credentialParams, ignoredParams, keyedHref } from '../../sidecar/cache/key.js'

const ignore = ignoredParams('X-Amz-*, t')

test('named parameters and wildcards leave the key; the rest stays, in order', () => {
  assert.equal(
    keyedHref('https://bucket.example/a.jpg?X-Amz-Signature=abc&v=2&X-Amz-Date=20260101&t=17&tt=1', ignore),
    'https://bucket.example/a.jpg?v=2&tt=1',
  )
  assert.equal(keyedHref('https://bucket.example/a.jpg?X-Amz-Signature=abc&t=1', ignore), 'https://bucket.example/a.jpg')
})

test('names match exactly (case included); a wildcard only where written', () => {
  assert.equal(keyedHref('https://b.example/a.jpg?x-amz-signature=1&T=2&at=3', ignore), 'https://b.example/a.jpg?x-amz-signature=1&T=2&at=3')
})

test('relative sources, and no option, keep the href as it is', () => {
  assert.equal(keyedHref('/a.jpg?t=1', ignore), '/a.jpg?t=1')
  assert.equal(keyedHref('https://b.example/a.jpg?t=1', undefined), 'https://b.example/a.jpg?t=1')
  assert.equal(ignoredParams(''), undefined)
})

test('percent-encoded names are compared decoded; the kept query is not re-encoded', () => {
  assert.equal(keyedHref('https://b.example/a.jpg?X%2DAmz%2DDate=1&q=a%20b', ignore), 'https://b.example/a.jpg?q=a%20b')
})

test('credential-like parameters are found in a spec, through wildcards and in any case; cache-busters are not', () => {
  for (const spec of ['X-Amz-*', 'X-Amz-Signature', 'x-amz-*', 'Signature', 'Expires', 'token', 'sig', 'X-Goog-*', 'X-Goog-Signature', '*', 'Sig*', 'Key-Pair-Id', 'Policy', 'access_token', 'uploadToken', 'api_key', 'se', 's']) {
    assert.notDeepEqual(credentialParams(spec), [], spec)
  }
  for (const spec of ['t', 'v', 'ts', 'version', 'cb', 'w', 'utm_*']) assert.deepEqual(credentialParams(spec), [], spec)
  assert.deepEqual(credentialParams('t, X-Amz-*'), [{ pattern: 'X-Amz-*', covers: 'X-Amz-Signature' }])
})

test('a credential name is refused in any spelling of its case, and through a wildcard in any case (review find: Key, Se, X-amz-* passed)', () => {
  for (const spec of ['Key', 'kEy', 'Se', 'Hdnts', 'Key-pair-id', 'GoogleAccessID', 'X-amz-*', 'x-GOOG-*', 'S']) assert.notDeepEqual(credentialParams(spec), [], spec)
})

test('a purge computes at most MAX_CANDIDATE_KEYS candidate keys: past it, none (the index alone), never 600,000 on the request path', async () => {
  const { candidateKeys, MAX_CANDIDATE_KEYS } = await import('../../sidecar/cache/key.js')
  const defaults = { widths: [16, 32, 48, 64, 96, 128, 256, 384, 640, 750, 828, 1080, 1200, 1920, 2048, 3840], qualities: [75] }
  const sources = (n: number) => Array.from({ length: n }, (_, i) => `/img/${i}.jpg`)
  // With Next's default sizes: widths × 1 quality × the keyed types + the placeholder, per source.
  const perSource = candidateKeys(sources(1), defaults, 16, undefined)!.size
  assert.ok(perSource > 16 && perSource < 100, String(perSource))
  assert.equal(candidateKeys(sources(Math.floor(MAX_CANDIDATE_KEYS / perSource)), defaults, 16, undefined)!.size, Math.floor(MAX_CANDIDATE_KEYS / perSource) * perSource)
  const schemaMaximum = { widths: Array.from({ length: 50 }, (_, i) => 16 + i), qualities: Array.from({ length: 20 }, (_, i) => 5 * (i + 1)) }
  assert.equal(candidateKeys(sources(200), schemaMaximum, 16, undefined), undefined)
})
