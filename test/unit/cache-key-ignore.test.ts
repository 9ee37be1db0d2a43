/** --cache-key-ignore-params: which query parameters of an absolute source leave its cache key. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ignoredParams, keyedHref } from '../../sidecar/cache/key.js'

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
