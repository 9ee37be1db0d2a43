/**
 * The two packages as a user receives them: `npm pack` tarballs of the built tree, and the frontend
 * package installed from its tarball by npm (with its dependency from the registry), never linked to
 * the source tree.
 */
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'

import { join, resolve } from 'node:path'

const REPO = resolve(import.meta.dirname, '../..')

export const FRONTEND_PACKAGE = 'next-image-sidecar-loader'
const FRONTEND_DIR = join(REPO, 'loader')

let packDir: string | undefined
const packed = new Map<string, string>()

/**
 * `npm pack` of a package of this repository (`workspace` for the frontend one, none for the server);
 * the tarball path. Scripts are skipped: `npm test` built both first, and a rebuild here would empty
 * dist/ under other tests.
 */
export function pack(workspace?: string): string {
  const key = workspace ?? '.'
  const cached = packed.get(key)
  if (cached) return cached
  for (const built of [join(FRONTEND_DIR, 'dist/loader.js'), join(REPO, 'dist/sidecar/cli/main.js')]) {
    if (!existsSync(built)) throw new Error(`${built} is missing: run npm run build first`)
  }
  packDir ??= mkdtempSync(join(tmpdir(), 'nis-pack-'))
  const args = ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir, ...(workspace ? ['--workspace', workspace] : [])]
  const [result] = JSON.parse(execFileSync('npm', args, { cwd: REPO, encoding: 'utf8' })) as Array<{ filename: string }>
  const path = join(packDir, result!.filename)
  packed.set(key, path)
  return path
}

/** Runs npm in `dir` with its output kept for errors only. */
export function npm(dir: string, args: string[]): string {
  // Synchronous, so no test timeout can cut a hung install: bounded here.
  return execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000, killSignal: 'SIGKILL' })
}

let installed: string | undefined

/**
 * Puts the frontend package, installed by npm from its packed tarball, into `appDir`'s node_modules
 * (beside the app's own `next`, as `npm install next-image-sidecar-loader` would). The install runs
 * once per process in a directory of its own, so a workspace app is not re-resolved by npm.
 */
export function installPackedFrontend(appDir: string): void {
  if (!installed) {
    installed = mkdtempSync(join(tmpdir(), 'nis-frontend-install-'))
    writeFileSync(join(installed, 'package.json'), JSON.stringify({ name: 'frontend-install', private: true }))
    // --omit=peer: `next` is the app's own.
    npm(installed, ['install', '--omit=peer', pack(FRONTEND_PACKAGE)])
  }
  const from = join(installed, 'node_modules')
  const to = join(appDir, 'node_modules')
  mkdirSync(to, { recursive: true })
  const lock = JSON.parse(readFileSync(join(from, '.package-lock.json'), 'utf8')) as { packages: Record<string, unknown> }
  for (const path of Object.keys(lock.packages).filter((p) => p.startsWith('node_modules/'))) {
    const name = path.slice('node_modules/'.length)
    rmSync(join(to, name), { recursive: true, force: true })
    cpSync(join(from, name), join(to, name), { recursive: true })
  }
}
