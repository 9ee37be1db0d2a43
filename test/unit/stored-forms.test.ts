/** The parsed metadata of stored entries (StoredForms), kept per key so a hit parses no JSON: bounded. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { encodeEntry, StoredForms } from '../../sidecar/cache/codec.js'
import type { CacheEntry } from '../../sidecar/cache/types.js'

// One expiry for every entry: a header differs from the one kept only when the test means it to.
const expireAt = Date.now() + 60_000
const stored = (href: string): Buffer => {
  const entry: CacheEntry = { buffer: Buffer.from('image'), contentType: 'image/webp', maxAge: 60, expireAt, etag: 'e', upstreamEtag: 'e', variant: { href, width: 64, quality: 75, mimeType: 'image/webp' } }
  return encodeEntry(entry)
}

test('forms of headers with the longest URLs stay within the byte bound, the newest kept', () => {
  const forms = new StoredForms(10_000, 1024 * 1024)
  const long = (i: number) => `/images/${String(i).padStart(6, '0')}/${'x'.repeat(3000)}.jpg`
  for (let i = 0; i < 10_000; i++) assert.ok(forms.decode(`k${i}`, stored(long(i))))
  assert.ok(forms.size <= 1024 * 1024, `${forms.size} bytes held`)
  const parsed = forms.parsed
  forms.decode('k9999', stored(long(9999)))
  assert.equal(forms.parsed, parsed, 'the newest form was let go')
  forms.decode('k0', stored(long(0)))
  assert.equal(forms.parsed, parsed + 1, 'the oldest form was kept')
})

test('a forgotten key gives its bytes back', () => {
  const forms = new StoredForms()
  forms.decode('k', stored('/a.png'))
  assert.ok(forms.size > 0)
  forms.forget('k')
  assert.equal(forms.size, 0)
})
