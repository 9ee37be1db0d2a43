/**
 * The server package installs where only the npm registry is reachable and no compiler is: both
 * tarballs (`npm pack`) installed by npm into an empty directory under this Node (26 in CI), with a
 * fresh HOME (an empty npm cache), no npm_config_* from the environment (nodedir among them) and a
 * PATH holding only node, npm and the shell tools the command's script uses — no cc, gcc, g++, make
 * or python3. Nothing installed may run an install script. Then its own command, in that directory
 * with a next.config.ts (no tsx) and its default cache (SQLite under .cache/), serves an image from a
 * loopback upstream: MISS, then HIT after a restart (from the file, not the hot tier).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stopChild } from '../helpers/cli.js'
import { FRONTEND_PACKAGE, pack } from '../helpers/packages.js'
import { freePort } from '../helpers/next-app.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { image } from '../helpers/image-url.js'
import { waitUntil } from '../helpers/wait.js'

const MB = 1e6
/** Shell tools bin/next-image-sidecar and npm's script runner use. */
const TOOLS = ['sh', 'readlink', 'dirname', 'uname', 'env']
const COMPILERS = ['cc', 'gcc', 'g++', 'c++', 'make', 'python3', 'python']

let dir: string
let upstream: UpstreamServer
let env: Record<string, string>

function which(name: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim()
  if (!found) throw new Error(`${name} is not on this machine's PATH`)
  return realpathSync(found)
}

function bytesOf(path: string): number {
  const stat = statSync(path)
  if (!stat.isDirectory()) return stat.size
  return readdirSync(path).reduce((sum, name) => sum + bytesOf(join(path, name)), 0)
}

before(async () => {
  upstream = await startUpstream()
  dir = mkdtempSync(join(tmpdir(), 'nis-server-install-'))
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  symlinkSync(process.execPath, join(bin, 'node'))
  symlinkSync(which('npm'), join(bin, 'npm'))
  for (const tool of TOOLS) symlinkSync(which(tool), join(bin, tool))
  const home = join(dir, 'home')
  mkdirSync(home)
  // Nothing of this environment but how it reaches the registry (CA bundle, proxy): no npm_config_*
  // (nodedir, cache, userconfig), no compiler on PATH.
  const network = Object.entries(process.env).filter(([name]) => /^(NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|https?_proxy|no_proxy)$/i.test(name))
  env = { ...(Object.fromEntries(network) as Record<string, string>), PATH: bin, HOME: home, TMPDIR: tmpdir(), LANG: 'C.UTF-8' }
  for (const name of COMPILERS) assert.notEqual(spawnSync('sh', ['-c', `command -v ${name}`], { env }).status, 0, `${name} is reachable on the test's PATH`)
})
after(async () => {
  await upstream?.close()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

const CONFIG = `import type { NextConfig } from 'next'
const config: NextConfig = { images: { qualities: [60, 75] } }
export default config
`

test(`npm install of the packed server into an empty directory, under Node ${process.versions.node} with no compiler or python: no install script, then MISS and HIT from its default SQLite cache`, { timeout: 600_000 }, async () => {
  const app = join(dir, 'app')
  mkdirSync(app)
  // As a Next app's: no "type".
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'sidecar-install', private: true }))
  const tarballs = [pack(), pack(FRONTEND_PACKAGE)]
  const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs], { cwd: app, env, encoding: 'utf8', timeout: 540_000, killSignal: 'SIGKILL' })
  assert.equal(install.status, 0, `npm install failed:\n${install.stderr}`)

  const lock = JSON.parse(readFileSync(join(app, 'node_modules/.package-lock.json'), 'utf8')).packages as Record<string, { hasInstallScript?: boolean }>
  const packages = Object.keys(lock).filter((p) => p.includes('node_modules/'))
  const scripts = packages.filter((p) => lock[p]!.hasInstallScript)
  const bytes = bytesOf(join(app, 'node_modules'))
  process.stderr.write(`server install into an empty directory: ${packages.length} packages, ${(bytes / MB).toFixed(1)} MB, install scripts: ${scripts.join(', ') || 'none'}\n`)
  assert.deepEqual(scripts, [])
  for (const gone of ['sqlite3', '@keyv/sqlite', 'tsx', 'esbuild', 'node-gyp']) assert.equal(existsSync(join(app, 'node_modules', gone)), false, `${gone} was installed`)

  writeFileSync(join(app, 'next.config.ts'), CONFIG)
  const start = async (): Promise<{ url: string; child: ChildProcess }> => {
    const port = await freePort()
    // The default cache (sqlite://.cache/next-image-sidecar/cache.sqlite under the working directory); no hot tier, so a HIT is the file's.
    const child = spawn(join(app, 'node_modules/.bin/next-image-sidecar'), ['--host', '127.0.0.1', '--port', String(port), '--frontend', upstream.url, '--config', 'next.config.ts', '--hot-cache-size', '0'], {
      cwd: app,
      env: { ...env, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let stderr = ''
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
    const url = `http://127.0.0.1:${port}`
    try {
      await waitUntil(async () => {
        if (child.exitCode !== null) throw new Error(`the installed sidecar exited with ${child.exitCode}: ${stderr}`)
        return (await fetch(`${url}/readyz`).catch(() => undefined))?.ok === true
      }, 'the installed sidecar to be ready', 60_000, 100)
      // Nothing on stderr at start: no driver warning, none about the config's module type
      // (a Next app's package.json has no "type", its next.config.ts is ESM: seen here before).
      assert.equal(stderr, '')
    } catch (err) {
      child.kill('SIGKILL')
      throw err
    }
    return { url, child }
  }
  const stop = async (child: ChildProcess) => {
    await stopChild(child)
  }
  const get = (url: string) => fetch(`${url}${image('/corpus/photo-jpeg/rocket.jpg', 640, 60)}`, { headers: { accept: 'image/webp' } })

  const first = await start()
  try {
    const res = await get(first.url)
    assert.equal(res.status, 200, await res.clone().text())
    assert.equal(res.headers.get('content-type'), 'image/webp')
    assert.equal(res.headers.get('x-nextjs-cache'), 'MISS')
    await res.arrayBuffer()
    // q=60 is allowed only by next.config.ts: the TypeScript config was loaded.
    assert.equal((await fetch(`${first.url}${image('/corpus/photo-jpeg/rocket.jpg', 640, 50)}`)).status, 400)
  } finally {
    await stop(first.child)
  }
  assert.ok(existsSync(join(app, '.cache/next-image-sidecar/cache.sqlite')), 'the default cache file is where the docs say')
  const second = await start()
  try {
    const res = await get(second.url)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('x-nextjs-cache'), 'HIT')
    await res.arrayBuffer()
  } finally {
    await stop(second.child)
  }
})
