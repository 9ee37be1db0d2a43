import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync, statSync, symlinkSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { join, resolve } from 'node:path'
import { CORPUS } from './upstream-server.js'

export const REPO = resolve(import.meta.dirname, '../..')

/**
 * The Next lines the tests run and where each is installed: 16.5 is the root's `next`, 16.4 the
 * test/next16-4 workspace, 15.5 the test/next15 workspace. A major names its newest line.
 */
export type NextMajor = 15 | 16
export type NextLine = '15.5' | '16.4' | '16.5'
export const NEXT_LINES: Record<NextLine, string> = {
  '16.5': join(REPO, 'node_modules/next'),
  '16.4': join(REPO, 'test/next16-4/node_modules/next'),
  '15.5': join(REPO, 'test/next15/node_modules/next'),
}
export const NEXT_PACKAGES: Record<NextMajor, string> = { 16: NEXT_LINES['16.5'], 15: NEXT_LINES['15.5'] }
export const testLineOf = (version: NextMajor | NextLine): NextLine => (typeof version === 'number' ? (version === 16 ? '16.5' : '15.5') : version)

/** NEXT_MAJOR=15 runs the Next-app tests that follow it (example app, e2e) against Next 15.5. */
export function nextMajorFromEnv(): NextMajor {
  const raw = process.env.NEXT_MAJOR ?? '16'
  if (raw !== '15' && raw !== '16') throw new Error(`NEXT_MAJOR: expected 15 or 16, received "${raw}"`)
  return Number(raw) as NextMajor
}

/** The `next` binary an app directory resolves (its own node_modules/next first, as `next build` there). */
function nextBin(dir: string): string {
  return createRequire(join(dir, 'package.json')).resolve('next/dist/bin/next')
}

/**
 * Makes `dir` resolve `next` to the given line: 16.5 is the root's, the others are linked into the
 * app's own node_modules (Next follows the link to its real directory, where its own files resolve).
 */
export function useNextMajor(dir: string, version: NextMajor | NextLine): void {
  const line = testLineOf(version)
  const [link, bin] = [join(dir, 'node_modules/next'), join(dir, 'node_modules/.bin/next')]
  for (const path of [link, bin]) rmSync(path, { recursive: true, force: true })
  if (line === '16.5') return
  mkdirSync(join(dir, 'node_modules/.bin'), { recursive: true })
  symlinkSync(NEXT_LINES[line], link, 'dir')
  // `npm run build` there finds this `next` first, as after an install.
  symlinkSync(join(NEXT_LINES[line], 'dist/bin/next'), bin)
}

/**
 * The example app for a major: itself for 16; for 15 a copy beside the tests (sources only) whose
 * `next` is Next 15.5, so the same app is built and served by each.
 */
export function exampleAppFor(major: NextMajor): string {
  const source = join(REPO, 'example-next-app')
  if (major === 16) return source
  const copy = join(REPO, `test/.example-app-${major}`)
  rmSync(copy, { recursive: true, force: true })
  cpSync(source, copy, { recursive: true, filter: (path) => !/[/\\](node_modules|\.next[^/\\]*)$/.test(path) })
  useNextMajor(copy, major)
  return copy
}
const env = { ...process.env, NEXT_TELEMETRY_DISABLED: '1' }

export async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  const { port } = server.address() as { port: number }
  await new Promise((r) => server.close(r))
  return port
}

function hashTree(dir: string): string {
  const hash = createHash('sha256')
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const path = join(d, name)
      if (statSync(path).isDirectory()) walk(path)
      else hash.update(path.slice(dir.length)).update(readFileSync(path))
    }
  }
  walk(dir)
  return hash.digest('hex')
}

/**
 * Copies a fixture app to `target` (inside the repository, so it resolves `next` and
 * `react` from the root node_modules), puts the given corpus folders into public/ and
 * builds it with the real `next build`, unless an identical build is already there.
 */
export function buildFixtureApp(fixture: string, target: string, corpusDirs: string[], staticImports: Record<string, string> = {}, major: NextMajor | NextLine = 16): void {
  const stamp = join(target, '.fixture-hash')
  const wanted = hashTree(fixture) + corpusDirs.join(',') + JSON.stringify(staticImports) + `next${testLineOf(major)}`
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === wanted && existsSync(join(target, '.next/BUILD_ID'))) return
  rmSync(target, { recursive: true, force: true })
  cpSync(fixture, target, { recursive: true })
  for (const dir of corpusDirs) cpSync(join(CORPUS, dir), join(target, 'public', dir), { recursive: true })
  for (const [to, from] of Object.entries(staticImports)) cpSync(join(CORPUS, from), join(target, to))
  useNextMajor(target, major)
  // Synchronous, so no test timeout can cut it: bounded here (a build takes about a minute).
  execFileSync(process.execPath, [nextBin(target), 'build'], { cwd: target, env, stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000, killSignal: 'SIGKILL' })
  writeFileSync(stamp, wanted)
}

export interface RunningNext {
  url: string
  port: number
  stop(): Promise<void>
}

/** `next start` on a free port; resolves once it answers HTTP. */
export async function startNext(dir: string, extraEnv: Record<string, string> = {}): Promise<RunningNext> {
  rmSync(join(dir, '.next/cache/images'), { recursive: true, force: true })
  mkdirSync(join(dir, '.next/cache'), { recursive: true })
  const port = await freePort()
  const child: ChildProcess = spawn(process.execPath, [nextBin(dir), 'start', '-p', String(port), '-H', '127.0.0.1'], {
    cwd: dir,
    env: { ...env, ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 60_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`next start exited with ${child.exitCode}:\n${output}`)
    try {
      await fetch(`${url}/`, { signal: AbortSignal.timeout(2000) })
      break
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL')
        throw new Error(`next start did not answer within 60 s:\n${output}`)
      }
      await new Promise((r) => setTimeout(r, 250))
    }
  }
  return {
    url,
    port,
    stop: async () => {
      if (child.exitCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))])
      if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}

/** `next build` of a project directory with extra environment (e.g. IMAGE_SIDECAR_URL). */
export function nextBuild(dir: string, extraEnv: Record<string, string>): void {
  execFileSync('npm', ['run', 'build'], { cwd: dir, env: { ...env, ...extraEnv }, stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000, killSignal: 'SIGKILL' })
}
