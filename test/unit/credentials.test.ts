/** Credential-like query parameters: which names they are, and URLs with their secret values hidden. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isCredentialParam, isSecretParam, redactError, redactText } from '../../sidecar/runtime/credentials.js'

test('credential-like names, in any case; cache-busters are not', () => {
  for (const name of ['X-Amz-Signature', 'x-amz-credential', 'X-Amz-Security-Token', 'X-Goog-Signature', 'Signature', 'Key-Pair-Id', 'Policy', 'sig', 'token', 'access_token', 'api_key', 'uploadToken', 's']) assert.ok(isCredentialParam(name), name)
  for (const name of ['t', 'v', 'w', 'q', 'url', 'version', 'utm_source']) assert.ok(!isCredentialParam(name), name)
  // Kept in logs: when and how a URL was signed tells an operator why an origin refused it.
  for (const name of ['X-Amz-Date', 'X-Amz-Expires', 'Expires']) assert.ok(isCredentialParam(name) && !isSecretParam(name), name)
})

test('a presigned URL keeps its object, its other parameters and their order; only secret values go', () => {
  assert.equal(
    redactText('https://b.s3.example/a%20b.jpg?X-Amz-Date=20260101&X-Amz-Credential=AKIA%2Fx&X-Amz-Signature=abc&v=2#f'),
    'https://b.s3.example/a%20b.jpg?X-Amz-Date=20260101&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&v=2#f',
  )
  assert.equal(redactText('/images/a.png?token=t0k&x=1'), '/images/a.png?token=REDACTED&x=1')
  assert.equal(redactText('https://b.example/a.jpg?X%2DAmz%2DSignature=abc'), 'https://b.example/a.jpg?X%2DAmz%2DSignature=REDACTED')
})

test('inside an optimizer request the encoded source is redacted, and the request\'s own s', () => {
  const src = 'https://b.example/a.jpg?Signature=abc&Key-Pair-Id=K1&t=5'
  assert.equal(
    redactText(`/_next/image?url=${encodeURIComponent(src)}&w=640&q=75&s=deadbeef`),
    `/_next/image?url=${encodeURIComponent('https://b.example/a.jpg?Signature=REDACTED&Key-Pair-Id=REDACTED&t=5')}&w=640&q=75&s=REDACTED`,
  )
})

test('messages naming URLs, and userinfo passwords', () => {
  assert.equal(redactText('upstream https://h/a.jpg?sig=xyz answered 500'), 'upstream https://h/a.jpg?sig=REDACTED answered 500')
  assert.equal(redactText('redis://user:hunter2@cache:6379/0'), 'redis://user:REDACTED@cache:6379/0')
  assert.equal(redactText('nothing here'), 'nothing here')
})

test('an error is copied with its message, stack and causes redacted; the original is untouched', () => {
  const cause = new Error('upstream https://h/a.jpg?X-Amz-Signature=s3cr3t answered 403')
  const err = Object.assign(new Error('failed', { cause }), { statusCode: 502 })
  const copy = redactError(err) as Error & { statusCode: number }
  assert.ok(copy instanceof Error)
  assert.equal(copy.statusCode, 502)
  assert.equal((copy.cause as Error).message, 'upstream https://h/a.jpg?X-Amz-Signature=REDACTED answered 403')
  assert.doesNotMatch(String((copy.cause as Error).stack), /s3cr3t/)
  assert.match(cause.message, /s3cr3t/)
})

test('inside an encoded url=, a parameter whose "=" was left unescaped is redacted too (review find: the signature was logged)', () => {
  assert.equal(
    redactText('/_next/image?url=https%3A%2F%2Fcdn.example%2Fa.png%3FX-Amz-Signature=SECRETSIG1%26X-Amz-Credential=SECRETCRED1&w=64&q=75'),
    '/_next/image?url=https%3A%2F%2Fcdn.example%2Fa.png%3FX-Amz-Signature=REDACTED%26X-Amz-Credential=REDACTED&w=64&q=75',
  )
  assert.equal(redactText('/_next/image?url=%2Fa.png%3Fv%3D1&token%3DSECRET&w=64'), '/_next/image?url=%2Fa.png%3Fv%3D1&token%3DREDACTED&w=64')
})
