/**
 * sidecar/ is a map of its concerns, and imports point down: cli → server → image, cache → upstream →
 * next, runtime → errors. A module may import from its own folder or from a lower layer, never up.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { REPO } from '../helpers/next-app.js'

const SIDECAR = join(REPO, 'sidecar')
const LAYERS: Record<string, number> = { 'errors.ts': 0, next: 1, runtime: 1, upstream: 2, image: 3, cache: 3, server: 4, cli: 5, 'index.ts': 6 }

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
