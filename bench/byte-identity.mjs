// Byte identity of the sidecar's transform against each Next line's own optimizer, over the corpus:
// 16.5.0 (the root's next) and 16.4.6 (test/next16-4) imageOptimizerTransform, 15.5.29 (test/next15)
// imageOptimizer; every source at 64 and 384 px as WebP, AVIF and its own type. Needs dist/
// (npx tsc -p tsconfig.build.json). Run: node bench/byte-identity.mjs
import { createRequire } from 'node:module'
import { readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
const REPO = resolve(import.meta.dirname, '..')
const { transformImage } = await import(REPO + '/dist/sidecar/image/transform.js')
const { resolveNextConfig } = await import(REPO + '/dist/sidecar/next/images-config.js')
const { PROFILES } = await import(REPO + '/dist/sidecar/next/next-version.js')
const { extractEtag } = await import(REPO + '/dist/sidecar/next/etag.js')
const corpus = resolve(REPO, '../shared/corpus')
const nextConfig = { images: { minimumCacheTTL: 14400, dangerouslyAllowSVG: false }, experimental: { imgOptMaxInputPixels: 268_402_689, imgOptTimeoutInSeconds: 7, imgOptMozjpeg: true, imgOptConcurrency: null, imgOptOperationCache: null, imgOptSequentialRead: null } }
const at = (dir) => createRequire(join(dir, 'package.json'))
const lines = {
  '16.5': (u, p) => { const r = at(REPO + '/node_modules/next'); return r('./dist/server/image-optimizer/transform.js').imageOptimizerTransform(u, p, r('./dist/server/image-optimizer.js').getImageOptimizerTransformOptions(nextConfig)) },
  '16.4': (u, p) => at(REPO + '/test/next16-4/node_modules/next')('./dist/server/image-optimizer/transform.js').imageOptimizerTransform(u, p, nextConfig),
  '15.5': (u, p) => at(REPO + '/test/next15/node_modules/next')('./dist/server/image-optimizer.js').imageOptimizer(u, p, { ...nextConfig, images: { ...nextConfig.images, minimumCacheTTL: 60 } }, { isDev: false }),
}
const files = readdirSync(corpus, { recursive: true, withFileTypes: true }).filter((d) => d.isFile() && !d.name.endsWith('.md')).map((d) => join(d.parentPath, d.name).slice(corpus.length + 1)).filter((f) => !/^(bad|svg)\//.test(f))
for (const [line, theirs] of Object.entries(lines)) {
  const resolved = resolveNextConfig({}, 'x', PROFILES[line])
  let same = 0, total = 0; const diffs = []
  for (const file of files) {
    const buffer = readFileSync(join(corpus, file))
    for (const width of [64, 384]) for (const mimeType of ['image/webp', 'image/avif', '']) {
      const upstream = { buffer, contentType: 'application/octet-stream', cacheControl: undefined, etag: extractEtag(undefined, buffer), validators: {}, status: 200 }
      const params = { href: `/${file}`, width, quality: 75, mimeType }
      let a, b
      try { a = await transformImage(upstream, params, { minimumCacheTTL: resolved.images.minimumCacheTTL, dangerouslyAllowSVG: false, sharp: resolved.sharp }) } catch (e) { a = { err: e.message } }
      try { b = await theirs(upstream, params) } catch (e) { b = { err: e.message } }
      total++
      if ((a.err && a.err === b.err) || (a.buffer && b.buffer && Buffer.from(a.buffer).equals(Buffer.from(b.buffer)) && a.contentType === b.contentType)) same++
      else diffs.push(`${file} ${width} ${mimeType || 'src'}: ${a.err ?? a.contentType + ' ' + a.buffer?.length} vs ${b.err ?? b.contentType + ' ' + b.buffer?.length}`)
    }
  }
  console.log(line, `${same}/${total} equal`, diffs.slice(0, 8))
  if (same !== total) process.exitCode = 1
}
