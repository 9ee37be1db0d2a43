/**
 * next.config.ts under the real CLI, with no tsx: Node strips the types itself. A config using
 * syntax that needs a transform (an enum) stops the start with a message naming the rewrite; a Node
 * that does not strip types stops it with the Node version or flag that does. The CLI runs as a child
 * of plain node (the test runner's tsx hooks are not inherited).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { CLI } from '../helpers/cli.js'
import { freePort, REPO } from '../helpers/next-app.js'
import { waitUntil } from '../helpers/wait.js'
import { typeStrippingProblem } from '../../sidecar/next/config-module.js'

const serveArgs = ['--host', '127.0.0.1', '--cache', 'memory://', '--frontend', 'http://127.0.0.1:9', '--next-version', '16']

function configDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'nis-config-ts-'))
  for (const [name, source] of Object.entries(files)) writeFileSync(join(dir, name), source)
  return dir
}

async function runToExit(args: string[], nodeArgs: string[] = []): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [...nodeArgs, CLI, ...args], { env: { ...process.env, LOG_LEVEL: 'warn', NODE_OPTIONS: '' }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)
  return { code, stderr }
}

const TYPED = `import type { NextConfig } from 'next'
import { extraWidth } from './widths.ts'
type Width = number
const width: Width = extraWidth satisfies number
const config: NextConfig = { images: { deviceSizes: [640, 750, 828, 1080, 1200, 1920, 2048, 3840, width] } }
export default config
`

test('a typed next.config.ts (import type, annotations, satisfies, a .ts import) is loaded by Node and served', async () => {
  const dir = configDir({ 'next.config.ts': TYPED, 'widths.ts': 'export const extraWidth: number = 4096\n' })
  const port = await freePort()
  const child = spawn(process.execPath, [CLI, ...serveArgs, '--port', String(port), '--config', join(dir, 'next.config.ts')], {
    env: { ...process.env, LOG_LEVEL: 'silent', NODE_OPTIONS: '' },
    stdio: 'ignore',
  })
  try {
    const ask = (w: number) => fetch(`http://127.0.0.1:${port}/_next/image?url=%2Fa.png&w=${w}&q=75`).catch(() => undefined)
    await waitUntil(async () => (await ask(640)) !== undefined, 'the sidecar to answer', 20_000)
    assert.notEqual(await (await ask(4096))!.text(), '"w" parameter (width) of 4096 is not allowed')
    assert.equal(await (await ask(4000))!.text(), '"w" parameter (width) of 4000 is not allowed')
  } finally {
    child.kill('SIGKILL')
  }
})

test('an enum in next.config.ts stops the start with the rewrite that works', async () => {
  const dir = configDir({ 'next.config.ts': 'enum Q { Low = 50 }\nexport default { images: { qualities: [Q.Low] } }\n' })
  const run = await runToExit([...serveArgs, '--port', String(await freePort()), '--config', join(dir, 'next.config.ts')])
  assert.equal(run.code, 1, run.stderr)
  assert.match(run.stderr, /^next-image-sidecar: --config: could not load .*next\.config\.ts: TypeScript enum is not supported in strip-only mode/)
  assert.match(run.stderr, /`as const` instead of an enum.*or compile it to next\.config\.mjs/)
  assert.doesNotMatch(run.stderr, /\n\s+at /)
})

test('an import without its extension names the fix', async () => {
  const dir = configDir({ 'next.config.ts': TYPED.replace("'./widths.ts'", "'./widths'"), 'widths.ts': 'export const extraWidth: number = 4096\n' })
  const run = await runToExit([...serveArgs, '--port', String(await freePort()), '--config', join(dir, 'next.config.ts')])
  assert.equal(run.code, 1, run.stderr)
  assert.match(run.stderr, /give relative imports their extension, e\.g\. '\.\/images\.ts'/)
})

test('on a Node that does not strip types, the start stops naming the Node version and the flag', async () => {
  const dir = configDir({ 'next.config.ts': TYPED, 'widths.ts': 'export const extraWidth: number = 4096\n' })
  const run = await runToExit([...serveArgs, '--port', String(await freePort()), '--config', join(dir, 'next.config.ts')], ['--no-experimental-strip-types'])
  assert.equal(run.code, 1, run.stderr)
  assert.match(run.stderr, new RegExp(`is TypeScript, and Node ${process.version.replace(/\./g, '\\.')} does not strip types here\\. Run Node 22\\.18 or later \\(22\\.15–22\\.17: set NODE_OPTIONS=--experimental-strip-types`))
})

test('typeStrippingProblem: none where Node strips or transforms; the fix where it does not', () => {
  assert.equal(typeStrippingProblem('/a/next.config.ts', 'v22.18.0', 'strip'), undefined)
  assert.equal(typeStrippingProblem('/a/next.config.ts', 'v24.0.0', 'transform'), undefined)
  assert.match(typeStrippingProblem('/a/next.config.ts', 'v22.15.0', false)!, /Node v22\.15\.0 does not strip types here.*NODE_OPTIONS=--experimental-strip-types.*next\.config\.mjs/)
})

// Next compiles next.config.ts to CommonJS (SWC, its default), so monorepo configs use __dirname, __filename
// and require there — at module level and inside the config function. Node's type stripping keeps the file ESM,
// where those names do not exist (review find: the start stopped with "__dirname is not defined").
const COMMONJS_NAMES = `import path from 'node:path'
import type { NextConfig } from 'next'
const root: string = path.join(__dirname, '..')
const { extra } = require('./sizes.json') as { extra: number }
export default (phase: string): NextConfig => ({
  outputFileTracingRoot: root,
  images: { deviceSizes: [640, 750, 828, 1080, 1200, 1920, 2048, 3840, extra, __filename.endsWith('next.config.ts') ? 4100 : 1] },
})
`

test('a next.config.ts using __dirname, __filename and require, as Next’s CommonJS compile allows, is loaded and served', async () => {
  const dir = configDir({ 'next.config.ts': COMMONJS_NAMES, 'sizes.json': '{ "extra": 4096 }\n' })
  const port = await freePort()
  const child = spawn(process.execPath, [CLI, ...serveArgs, '--port', String(port), '--config', join(dir, 'next.config.ts')], {
    env: { ...process.env, LOG_LEVEL: 'silent', NODE_OPTIONS: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
  try {
    const ask = (w: number) => fetch(`http://127.0.0.1:${port}/_next/image?url=%2Fa.png&w=${w}&q=75`).catch(() => undefined)
    await waitUntil(async () => {
      if (child.exitCode !== null) throw new Error(`the sidecar exited with ${child.exitCode}: ${stderr}`)
      return (await ask(640)) !== undefined
    }, 'the sidecar to answer', 20_000)
    for (const width of [4096, 4100]) assert.notEqual(await (await ask(width))!.text(), `"w" parameter (width) of ${width} is not allowed`)
    assert.equal(await (await ask(4000))!.text(), '"w" parameter (width) of 4000 is not allowed')
  } finally {
    child.kill('SIGKILL')
  }
})

test('the CommonJS names exist only while the config loads: afterwards the process has none of them', () => {
  const dir = configDir({ 'next.config.ts': COMMONJS_NAMES, 'sizes.json': '{ "extra": 4096 }\n' })
  const script = `const { loadNextConfig } = await import(${JSON.stringify(pathToFileURL(join(REPO, 'dist/sidecar/next/next-config.js')).href)})
const config = await loadNextConfig(${JSON.stringify(join(dir, 'next.config.ts'))})
console.log(JSON.stringify([config.images.deviceSizes.at(-2), typeof globalThis.require, typeof globalThis.__dirname, typeof globalThis.__filename]))`
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } })
  assert.equal(out.trim(), JSON.stringify([4096, 'undefined', 'undefined', 'undefined']))
})
