// `npm run bench:estimate`: how good is the working-set estimate that admission by memory uses?
// Each corpus image × width × output type is transformed alone in a fresh process (Next's sharp
// pipeline, one libvips thread as in a 1-CPU pod); the observed peak RSS growth is compared with
// estimateWorkingSet(). Writes bench/results/estimate.{md,json}.
// Beside the corpus: progressive/baseline JPEGs and interlaced/plain PNGs of the same photo at three
// sizes, made here with sharp, since neither decoder can stream the first kind (see memory-estimate.ts).
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const CORPUS = join(ROOT, '../shared/corpus')
const MiB = 1024 ** 2
const files = ['large/elephants-3840x2160.jpg', 'large/truchet-dark-4096.webp', 'large/float-into-mate.png', 'photo-jpeg/garden.jpg', 'photo-jpeg/garden-progressive.jpg', 'photo-jpeg/storm.jpg', 'photo-jpeg/ladybird-exif-rotate-6.jpg', 'photo-jpeg/aqua-cmyk.jpg', 'png/chelsea-16bit.png', 'webp/garden-lossy.webp', 'avif/chelsea.avif', 'tiff/chessboard-u16.tif']
const widths = [640, 1920, 3840]

// `npm run bench:estimate -- progressive`: only the sources whose name holds the word (results then
// go to estimate-WORD.{md,json}, leaving the full run's files alone).
const only = process.argv[2]
const made = mkdtempSync(join(tmpdir(), 'nis-bench-estimate-'))
process.on('exit', () => rmSync(made, { recursive: true, force: true }))
const sources = files.map((file) => ({ file, path: join(CORPUS, file) }))
// Made in a process of its own: Linux keeps a process's peak RSS across exec, so a parent that had
// held these images would hand every probe below its peak as a starting point.
const make = `
  const sharp = (await import('sharp')).default
  const [dir, source] = process.argv.slice(1)
  for (const [w, h] of [[1920, 1280], [3840, 2560], [6000, 4000]]) {
    const photo = sharp(source).resize(w, h, { fit: 'fill' })
    await photo.clone().jpeg({ quality: 85 }).toFile(dir + '/baseline-' + w + 'x' + h + '.jpg')
    await photo.clone().jpeg({ quality: 85, progressive: true }).toFile(dir + '/progressive-' + w + 'x' + h + '.jpg')
    await photo.clone().jpeg({ quality: 85, progressive: true, chromaSubsampling: '4:4:4' }).toFile(dir + '/progressive-444-' + w + 'x' + h + '.jpg')
    await photo.clone().png().toFile(dir + '/plain-' + w + 'x' + h + '.png')
    await photo.clone().png({ progressive: true }).toFile(dir + '/interlaced-' + w + 'x' + h + '.png')
  }`
execFileSync(process.execPath, ['--input-type=module', '-e', make, made, join(CORPUS, 'large/elephants-3840x2160.jpg')], { cwd: ROOT })
for (const [w, h] of [[1920, 1280], [3840, 2560], [6000, 4000]]) {
  for (const name of [`baseline-${w}x${h}.jpg`, `progressive-${w}x${h}.jpg`, `progressive-444-${w}x${h}.jpg`, `plain-${w}x${h}.png`, `interlaced-${w}x${h}.png`]) {
    sources.push({ file: `(made) ${name}`, path: join(made, name) })
  }
}
const types = ['image/webp', 'image/avif', 'image/jpeg', 'image/png']

// One measurement, in a process of its own so earlier transforms leave nothing behind.
const probe = `
  const [file, width, type] = process.argv.slice(1)
  const { readFileSync } = await import('node:fs')
  const sharp = (await import('sharp')).default
  const { optimizeImage, configureSharp } = await import(${JSON.stringify(join(ROOT, 'dist/sidecar/image/transform.js'))})
  const { estimateWorkingSet } = await import(${JSON.stringify(join(ROOT, 'dist/sidecar/image/memory-estimate.js'))})
  const { resolveNextConfig } = await import(${JSON.stringify(join(ROOT, 'dist/sidecar/next/images-config.js'))})
  const config = resolveNextConfig({}).sharp
  configureSharp(config, 1)
  const buffer = readFileSync(file)
  const m = await sharp(buffer).metadata()
  const estimate = estimateWorkingSet({ format: m.format, width: m.width, height: m.height, channels: m.channels, depth: m.depth, orientation: m.orientation, isProgressive: m.isProgressive, chromaSubsampling: m.chromaSubsampling }, buffer.length, Number(width), type)
  globalThis.gc()
  const before = process.memoryUsage().rss
  await optimizeImage(buffer, type, Number(width), 75, config)
  const observed = process.resourceUsage().maxRSS * 1024 - before
  const kind = m.format === 'jpeg' ? (m.isProgressive ? 'progressive jpeg' : 'jpeg') : m.format === 'png' && m.isProgressive ? 'interlaced png' : m.format
  console.log(JSON.stringify({ format: kind, estimate, observed }))`

const rows = []
for (const { file, path } of sources.filter((s) => !only || s.file.includes(only))) {
  for (const width of widths) {
    for (const type of types) {
      const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', probe, path, String(width), type], { cwd: ROOT, encoding: 'utf8' })
      rows.push({ file, width, type, ...JSON.parse(out.trim().split('\n').at(-1)) })
      process.stderr.write('.')
    }
  }
}
process.stderr.write('\n')

const kinds = new Map()
for (const r of rows) {
  const kind = `${r.format} → ${r.type.slice(6)}`
  if (!kinds.has(kind)) kinds.set(kind, [])
  kinds.get(kind).push(r)
}
const fmt = (n) => n.toFixed(2)
const row = (cells) => `| ${cells.join(' | ')} |`
const lines = [
  `Estimated vs observed peak RSS growth of one transform (one libvips thread), ${rows.length} transforms, ${new Date().toISOString()}`,
  '',
  row(['source → output', 'transforms', 'largest observed', 'estimate ÷ observed: min', 'median', 'max', 'under-estimated by > 10 MiB']),
  row(['---', '---', '---', '---', '---', '---', '---']),
]
for (const [kind, list] of kinds) {
  const ratios = list.map((r) => r.estimate / Math.max(r.observed, 1)).sort((a, b) => a - b)
  const under = list.filter((r) => r.observed - r.estimate > 10 * MiB).length
  lines.push(row([kind, list.length, `${Math.round(Math.max(...list.map((r) => r.observed)) / MiB)} MiB`, fmt(ratios[0]), fmt(ratios[Math.floor(ratios.length / 2)]), fmt(ratios.at(-1)), under]))
}
const markdown = lines.join('\n')
mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
const name = only ? `estimate-${only.replace(/[^a-z0-9]+/gi, '-')}` : 'estimate'
writeFileSync(join(ROOT, `bench/results/${name}.json`), JSON.stringify(rows, null, 2))
writeFileSync(join(ROOT, `bench/results/${name}.md`), `${markdown}\n`)
console.log(markdown)
