/**
 * The release tarballs (scripts/pack-release.mjs, `npm run pack:release`), as a team installs them before
 * the packages are on a registry: each on its own, from its file, into an empty directory. The server's
 * tarball depended on a frontend package no registry has (`npm install ./next-image-sidecar-0.1.0.tgz`
 * failed); it now carries it. Both carry the licence and no source maps without their sources.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { REPO } from '../helpers/next-app.js'
import { npm } from '../helpers/packages.js'

let out: string
let frontend: string
let server: string
const dirs: string[] = []

before(() => {
  out = mkdtempSync(join(tmpdir(), 'nis-release-out-'))
  dirs.push(out)
  ;[frontend, server] = execFileSync(process.execPath, [join(REPO, 'scripts/pack-release.mjs'), out], { encoding: 'utf8' }).trim().split('\n') as [string, string]
})
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

const filesOf = (tarball: string) => execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).trim().split('\n')

function emptyProject(): string {
  const dir = mkdtempSync(join(tmpdir(), 'nis-release-install-'))
  dirs.push(dir)
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'empty', private: true, type: 'module' }))
  return dir
}

for (const which of ['frontend', 'server'] as const) {
  test(`the ${which} tarball carries the MIT licence and no source map (its .ts sources are not shipped)`, () => {
    const files = filesOf(which === 'frontend' ? frontend : server)
    assert.ok(files.includes('package/LICENSE'), files.slice(0, 20).join('\n'))
    // Ours, not what a bundled dependency ships (@noble/hashes has its maps with their sources).
    const own = files.filter((f) => !f.startsWith('package/node_modules/'))
    assert.match(readFileSync(join(REPO, 'LICENSE'), 'utf8'), /^MIT License/)
    assert.deepEqual(own.filter((f) => f.endsWith('.map')), [])
    assert.deepEqual(own.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')), [])
  })
}

test('the server tarball installs on its own from its file: the CLI runs and the re-exported frontend entries load', () => {
  const dir = emptyProject()
  npm(dir, ['install', server])
  const help = execFileSync(join(dir, 'node_modules/.bin/next-image-sidecar'), ['--help'], { encoding: 'utf8' })
  assert.match(help, /^next-image-sidecar/)
  const loaded = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', "const l = await import('next-image-sidecar/loader'); const c = await import('next-image-sidecar/config'); console.log(typeof l.default, typeof c.withImageSidecar)"],
    { cwd: dir, encoding: 'utf8' },
  )
  assert.equal(loaded.trim(), 'function function')
})

test('the frontend tarball installs on its own from its file, beside the app’s next', () => {
  const dir = emptyProject()
  npm(dir, ['install', frontend, `next@${(JSON.parse(readFileSync(join(REPO, 'node_modules/next/package.json'), 'utf8')) as { version: string }).version}`, 'react', 'react-dom'])
  const loaded = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', "const m = await import('next-image-sidecar-loader'); const p = await import('next-image-sidecar-loader/placeholder/pages'); console.log(typeof m.withImageSidecar, typeof p.getImagePlaceholder)"],
    { cwd: dir, encoding: 'utf8' },
  )
  assert.equal(loaded.trim(), 'function function')
})

test('the frontend tarball’s plain-Node placeholder entry works where next is not installed (next is an optional peer)', () => {
  const dir = emptyProject()
  npm(dir, ['install', '--omit=peer', frontend])
  assert.equal(existsSync(join(dir, 'node_modules/next')), false)
  const result = execFileSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      "const { getImagePlaceholder } = await import('next-image-sidecar-loader/placeholder/pages'); const r = await getImagePlaceholder('/a.jpg', { sidecarUrl: 'http://127.0.0.1:9', fallback: { width: 3, height: 2 } }); console.log(JSON.stringify([r.width, r.height, r.error.reason]))",
    ],
    { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  )
  assert.equal(result.trim(), JSON.stringify([3, 2, 'unavailable']))
})

test('both tarballs’ READMEs have no link a registry page cannot follow (only absolute and in-page ones)', () => {
  for (const tarball of [frontend, server]) {
    const readme = execFileSync('tar', ['xzf', tarball, '-O', 'package/README.md'], { encoding: 'utf8' })
    const relative = [...readme.matchAll(/\]\(([^)]+)\)/g)].map(([, target]) => target!).filter((target) => !/^(https?:|#)/.test(target))
    assert.deepEqual(relative, [], tarball)
    assert.ok(readme.length > 500)
  }
})
