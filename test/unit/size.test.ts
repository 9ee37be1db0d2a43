/**
 * The placeholder's sizer (sidecar/image/size.ts) against Next 16.5's own `getImageSize` over the whole
 * corpus: the same size wherever Next finds one, and no real image taken for an SVG polyglot.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { detectContentType } from '../../sidecar/image/detect.js'
import { FormatMismatch, headerSize, sniffsAsSvg, svgRootElement, SVG_SIZE_WINDOW } from '../../sidecar/image/size.js'
import { SVG } from '../../sidecar/next/image-types.js'
import { NEXT_PACKAGES } from '../helpers/next-app.js'
import { CORPUS, corpusFile } from '../helpers/upstream-server.js'

const require = createRequire(import.meta.url)
const getImageSize: (b: Buffer) => Promise<{ width?: number; height?: number }> = require(join(NEXT_PACKAGES[16], 'dist/server/image-optimizer/get-image-size.js')).getImageSize

const files = readdirSync(CORPUS, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .flatMap((d) => readdirSync(join(CORPUS, d.name)).map((f) => `${d.name}/${f}`))

test('every corpus image: the size Next reads, wherever Next reads one', async () => {
  let compared = 0
  for (const file of files) {
    const buffer = corpusFile(file)
    const type = detectContentType(buffer)
    if (!type?.startsWith('image/')) continue
    const next = await getImageSize(buffer).catch(() => undefined)
    if (!next?.width) continue
    const ours = headerSize(buffer, type)
    assert.deepEqual(ours && { width: ours.width, height: ours.height }, { width: next.width, height: next.height }, file)
    compared++
  }
  assert.ok(compared >= 40, `${compared} compared`)
})

test('no real image in the corpus sniffs as an SVG; every SVG does', () => {
  for (const file of files) {
    const buffer = corpusFile(file)
    assert.equal(sniffsAsSvg(buffer), detectContentType(buffer) === SVG, file)
  }
})

test('an SVG is sized from its root element, even past image-size\'s 1000-byte window, but not past its own', () => {
  const root = (attrs: string) => `<svg xmlns="http://www.w3.org/2000/svg" ${attrs}>`
  const longRoot = Buffer.from(`${root(`${'data-x="y" '.repeat(200)}width="12" height="34"`)}</svg>`)
  assert.deepEqual(headerSize(longRoot, SVG), { width: 12, height: 34 })
  assert.deepEqual(headerSize(Buffer.from(`${root('viewBox="0 0 300 150"')}</svg>`), SVG), { width: 300, height: 150 })
  const lateRoot = Buffer.from(`<!--${' '.repeat(SVG_SIZE_WINDOW)}-->${root('width="1" height="1"')}</svg>`)
  assert.equal(headerSize(lateRoot, SVG), undefined)
})

// image-size's root pattern is unanchored: on a window of "<svg " starts with no ">" it backtracks from each
// one (quadratic: 1.8 s for 64 KiB, the event loop blocked). The bound below is a hang guard, 250 times what a
// linear scan of 64 KiB takes; the speed itself is not what this asserts.
for (const [name, body] of [
  ['"<svg " repeated, no ">"', '<svg '.repeat(SVG_SIZE_WINDOW / 5)],
  ['an unterminated quote, then "<svg " repeated', `<svg a="${'<svg '.repeat(SVG_SIZE_WINDOW / 5)}`],
  ['"<svg \t" with quotes that never close', `<svg '${"<svg \t'".repeat(SVG_SIZE_WINDOW / 7)}`],
] as const) {
  test(`a hostile SVG window is refused in linear time: ${name}`, () => {
    const started = performance.now()
    const size = headerSize(Buffer.from(body), SVG)
    const elapsed = performance.now() - started
    assert.equal(size, undefined)
    assert.ok(elapsed < 250, `${elapsed.toFixed(0)} ms`)
  })
}

test('the root element is the first "<svg" followed by white space whose ">" closes outside quotes, as image-size reads it', () => {
  assert.deepEqual(headerSize(Buffer.from('<svg><svg width="5" height="6"></svg></svg>'), SVG), { width: 5, height: 6 })
  assert.deepEqual(headerSize(Buffer.from('<svg\nwidth="5" data-a="x>y" height="6"></svg>'), SVG), { width: 5, height: 6 })
  assert.deepEqual(headerSize(Buffer.from("<svg data-a='>' width='7' height='8'></svg>"), SVG), { width: 7, height: 8 })
})

test('the one-pass root finder agrees with image-size\'s pattern on 5,000 generated strings', () => {
  const pattern = /<svg\s([^>"']|"[^"]*"|'[^']*')*>/
  const tokens = ['<svg', '<svg ', ' ', '\n', '>', '"', "'", 'a', '=', '<sv', 'g']
  let seed = 42
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  for (let n = 0; n < 5000; n++) {
    const text = Array.from({ length: 1 + Math.floor(random() * 24) }, () => tokens[Math.floor(random() * tokens.length)]).join('')
    assert.equal(svgRootElement(text), text.match(pattern)?.[0], JSON.stringify(text))
  }
})

test('a header of another format than the detected type is a mismatch', () => {
  const png = corpusFile('png/chelsea.png')
  assert.throws(() => headerSize(png, 'image/jpeg'), FormatMismatch)
  assert.throws(() => headerSize(Buffer.from('GIF8<svg xmlns="http://www.w3.org/2000/svg" width="7" height="3"></svg>'), 'image/gif'), FormatMismatch)
  assert.deepEqual(headerSize(png, 'image/png'), { width: 451, height: 300 })
})
