#!/usr/bin/env node
// The two release tarballs, each installable on its own from a file (before, or without, a registry):
//   release/next-image-sidecar-loader-<v>.tgz  the frontend package, for the Next app
//   release/next-image-sidecar-<v>.tgz         the server, with the frontend package bundled inside
// The server depends on the frontend package (its /loader and /config re-exports, the Next line rule), which
// a registry may not have; so its tarball carries it (bundleDependencies). That cannot be packed from the
// workspace itself: there the bundled package is a symlink whose own dependencies sit in loader/
// (npm would pack them under that path, where an install never looks). So the server is staged in a
// directory of its own with the frontend package installed from its tarball, and packed from there.
// Expects a built tree (npm run build); `npm run pack:release` builds first.
import { execFileSync } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const REPO = resolve(import.meta.dirname, '..')
const out = resolve(process.argv[2] ?? join(REPO, 'release'))
const npm = (cwd, args) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
const packInto = (cwd, args = []) => join(out, JSON.parse(npm(cwd, ['pack', '--ignore-scripts', '--json', '--pack-destination', out, ...args]))[0].filename)

mkdirSync(out, { recursive: true })
const frontend = packInto(REPO, ['--workspace', 'next-image-sidecar-loader'])

const stage = mkdtempSync(join(tmpdir(), 'nis-release-'))
try {
  const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'))
  const frontendName = 'next-image-sidecar-loader'
  // Only the frontend package (and its dependencies) goes into the stage's node_modules: the server's other
  // dependencies are installed by the user's npm as usual. `next` is its optional peer: not bundled.
  writeFileSync(join(stage, 'package.json'), JSON.stringify({ name: 'stage', private: true }))
  npm(stage, ['install', '--ignore-scripts', '--omit=peer', '--no-package-lock', frontend])
  for (const entry of [...manifest.files, 'LICENSE']) cpSync(join(REPO, entry), join(stage, entry), { recursive: true })
  writeFileSync(join(stage, 'README.md'), registryReadme(readFileSync(join(REPO, 'README.md'), 'utf8')))
  const { devDependencies, workspaces, scripts, allowScripts, ...published } = manifest
  writeFileSync(
    join(stage, 'package.json'),
    `${JSON.stringify({ ...published, scripts: { start: scripts.start }, bundleDependencies: [frontendName] }, null, 2)}\n`,
  )
  const server = packInto(stage)
  console.log(`${frontend}\n${server}`)
} finally {
  rmSync(stage, { recursive: true, force: true })
}

/**
 * The README as a registry page shows it: links into the repository's files (docs/…) resolve against a
 * repository URL the package does not name, so each becomes its text and the path to read in the
 * repository; an image of one becomes its description. In-page (#…) and absolute links stay.
 */
export function registryReadme(markdown) {
  return markdown
    .replace(/!\[([^\]]*)\]\((?!https?:|#)[^)]+\)/g, '*$1*')
    .replace(/\[([^\]]+)\]\((?!https?:|#)([^)]+)\)/g, (_, text, path) => (text === path ? `\`${path}\` in the repository` : `${text} (\`${path}\` in the repository)`))
}
