/**
 * sidecar/ is a map of its concerns, and imports point down: cli → server → image, cache → upstream →
 * next, runtime → errors. A module may import from its own folder or from a lower layer, never up.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { pathToFileURL } from 'node:url'
import { dirname, join, normalize, relative } from 'node:path'
import { REPO } from '../helpers/next-app.js'

const SIDECAR = join(REPO, 'sidecar')
// The entry points at the top: the public API, and the compatibility re-exports of the frontend package
// (next-image-sidecar/loader and /config).
const LAYERS: Record<string, number> = { 'errors.ts': 0, next: 1, runtime: 1, upstream: 2, image: 3, cache: 3, server: 4, cli: 5, 'index.ts': 6, 'loader.ts': 6, 'config.ts': 6 }

const concernOf = (file: string) => relative(SIDECAR, file).split('/')[0]!
const modules = readdirSync(SIDECAR, { recursive: true, withFileTypes: true })
  .filter((d) => d.isFile() && d.name.endsWith('.ts'))
  .map((d) => join(d.parentPath, d.name))

test('every module of sidecar/ belongs to a known concern', () => {
  assert.deepEqual(modules.map(concernOf).filter((c) => !(c in LAYERS)), [])
})

test('imports point down: none from a lower concern to a higher one, or sideways between concerns', () => {
  const upward: string[] = []
  for (const file of modules) {
    const from = concernOf(file)
    for (const [, spec] of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
      const to = concernOf(normalize(join(dirname(file), spec!))).replace(/\.js$/, '.ts')
      if (to !== from && !(LAYERS[to]! < LAYERS[from]!)) upward.push(`${relative(SIDECAR, file)} → ${spec}`)
    }
  }
  assert.deepEqual(upward, [])
})

test('the CLI and the options table load no store client: --help, purge --target and a --workers primary stay small', () => {
  // The service (stores, Redis and SQLite clients, sharp) is imported only where it runs (cli/serve.ts).
  const script = `const { registerHooks } = await import('node:module')
const loaded = []
registerHooks({ load(url, context, next) { loaded.push(url); return next(url, context) } })
await import(${JSON.stringify(pathToFileURL(join(REPO, 'dist/sidecar/cli/serve.js')).href)})
await import(${JSON.stringify(pathToFileURL(join(REPO, 'dist/sidecar/server/options-table.js')).href)})
console.log(JSON.stringify(loaded.filter((url) => /node_modules\\/(@redis|keyv|@keyv|sharp)\\/|\\/cache\\/(open-store|sqlite-store|redis-store)\\.js$/.test(url))))`
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
  assert.deepEqual(JSON.parse(out), [])
})
