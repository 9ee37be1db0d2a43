/**
 * What `serve`, `warm` and `purge` make of their flags and environment, for many combinations: the
 * values, the defaults and the exact error of each. The expected answers (cli-parse.snapshot.json) were
 * recorded from the hand-written parser before the options table replaced it, so the table changes
 * nothing a user sees. `UPDATE_SNAPSHOT=1` rewrites the file (only for a deliberate change).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serveSettings } from '../../sidecar/cli/serve.js'
import { warmSettings } from '../../sidecar/cli/warm-command.js'
import { purgeSettings } from '../../sidecar/cli/purge-command.js'
import { defaultConcurrency, readContainerLimits } from '../../sidecar/runtime/limits.js'

const SNAPSHOT = new URL('./cli-parse.snapshot.json', import.meta.url)

/** Every variable the CLI reads: cleared before each case, so the machine's environment plays no part. */
const VARIABLES = [
  'PORT', 'HOST', 'WORKERS', 'METRICS_PORT', 'METRICS_HOST', 'FRONTEND_INTERNAL_URL', 'NEXT_CONFIG_PATH', 'NEXT_VERSION',
  'DANGEROUSLY_ALLOW_LOCAL_IP', 'MAXIMUM_REDIRECTS', 'IMAGE_CACHE_URL', 'CACHE_MAX_SIZE', 'CACHE_MAX_ENTRY_SIZE', 'CACHE_PREFIX',
  'HOT_CACHE_SIZE', 'CACHE_STRICT', 'CONCURRENCY', 'MEMORY_LIMIT', 'QUEUE_SIZE', 'MAX_ATTEMPTS', 'IMAGE_TIMEOUT_MS',
  'UPSTREAM_TIMEOUT_MS', 'HEADERS_TIMEOUT_MS', 'KEEP_ALIVE_TIMEOUT_MS', 'REVALIDATE_AFTER', 'CACHE_KEY_IGNORE_PARAMS',
  'DANGEROUSLY_IGNORE_CREDENTIAL_PARAMS', 'IMAGE_SIDECAR_ADMIN_TOKEN', 'IMAGE_SIDECAR_SIGNING_KEY', 'SHUTDOWN_DELAY_MS', 'SHUTDOWN_TIMEOUT_MS',
]

// A config of its own, in a directory with no `next` package (so the version is not detected).
const dir = mkdtempSync(join(tmpdir(), 'nis-cli-parse-'))
const CONFIG = join(dir, 'next.config.mjs')
writeFileSync(CONFIG, 'export default { basePath: "/base", images: { deviceSizes: [640, 1080] } }\n')
const BROKEN = join(dir, 'broken.config.mjs')
writeFileSync(BROKEN, 'export default { images: { deviceSizes: ["a"] } }\nthrow new Error("boom")\n')

type Case = [command: 'serve' | 'warm' | 'purge', argv: string[], env?: Record<string, string>]

const serve = (argv: string[], env?: Record<string, string>): Case => ['serve', argv, env]
const warm = (argv: string[], env?: Record<string, string>): Case => ['warm', argv, env]
const purge = (argv: string[], env?: Record<string, string>): Case => ['purge', argv, env]

const CASES: Case[] = [
  serve([]),
  serve(['--help']),
  serve(['-h']),
  serve(['--port', '8080', '--host', '127.0.0.1']),
  serve([], { PORT: '9000', HOST: '::1' }),
  serve([], { PORT: '', HOST: '' }),
  serve(['--port=70000']),
  serve(['--port', '0']),
  serve([], { PORT: 'abc' }),
  serve(['--port', '8080'], { PORT: 'abc' }),
  serve(['--workers', '4']),
  serve([], { WORKERS: '0' }),
  serve(['--workers', '257']),
  serve(['--workers', '1.5']),
  serve(['--workers', 'auto']),
  serve([], { WORKERS: 'auto' }),
  serve(['--metrics-port', '9464']),
  serve(['--metrics-port', '3001']),
  serve(['--port', '4000'], { METRICS_PORT: '4000' }),
  serve([], { METRICS_PORT: '9464', METRICS_HOST: '127.0.0.2' }),
  serve(['--host', '10.0.0.1', '--metrics-port', '9464']),
  serve(['--metrics-port', '0']),
  serve(['--frontend', 'http://frontend:3000']),
  serve([], { FRONTEND_INTERNAL_URL: 'http://env:3000' }),
  serve([], { FRONTEND_INTERNAL_URL: '' }),
  serve(['--config', CONFIG]),
  serve([], { NEXT_CONFIG_PATH: CONFIG }),
  serve(['--config', BROKEN]),
  serve(['--config', join(dir, 'missing.mjs')]),
  serve(['--next-version', '15']),
  serve(['--next-version', '16.4'], { NEXT_VERSION: '15' }),
  serve([], { NEXT_VERSION: '16.4' }),
  serve(['--next-version', '14']),
  serve([], { NEXT_VERSION: 'abc' }),
  serve(['--dangerously-allow-local-ip']),
  serve([], { DANGEROUSLY_ALLOW_LOCAL_IP: '1' }),
  serve([], { DANGEROUSLY_ALLOW_LOCAL_IP: 'true' }),
  serve(['--dangerously-allow-local-ip=1']),
  serve(['--maximum-redirects', '0']),
  serve(['--maximum-redirects', '21']),
  serve([], { MAXIMUM_REDIRECTS: '5' }),
  serve(['--cache', 'memory://']),
  serve([], { IMAGE_CACHE_URL: 'redis://127.0.0.1:6379' }),
  serve([], { IMAGE_CACHE_URL: '' }),
  serve(['--cache-max-size', '1000']),
  serve(['--cache-max-size', '0']),
  serve([], { CACHE_MAX_SIZE: '1Gi' }),
  serve(['--cache-max-entry-size', '5000']),
  serve([], { CACHE_MAX_ENTRY_SIZE: '-1' }),
  serve(['--cache-prefix', 'p:']),
  serve([], { CACHE_PREFIX: '' }),
  serve([], { CACHE_PREFIX: 'env:' }),
  serve(['--hot-cache-size', '0']),
  serve([], { HOT_CACHE_SIZE: '-1' }),
  serve(['--cache-strict']),
  serve([], { CACHE_STRICT: '1' }),
  serve([], { CACHE_STRICT: 'true' }),
  serve(['--concurrency', '4']),
  serve([], { CONCURRENCY: '0' }),
  serve(['--concurrency', '1025']),
  serve(['--memory-limit', '256Mi']),
  serve(['--memory-limit', '1Gi']),
  serve(['--memory-limit', '268435456']),
  serve([], { MEMORY_LIMIT: '1Mi' }),
  serve(['--memory-limit', 'abc']),
  serve(['--queue-size', '10']),
  serve(['--queue-size', '1e9']),
  serve(['--max-attempts', '1']),
  serve([], { MAX_ATTEMPTS: '21' }),
  serve(['--timeout', '1000']),
  serve([], { IMAGE_TIMEOUT_MS: '0' }),
  serve([], { IMAGE_TIMEOUT_MS: '' }),
  serve(['--timeout', '5'], { IMAGE_TIMEOUT_MS: '6' }),
  serve(['--timeout', '2147483648']),
  serve(['--upstream-timeout', '100']),
  serve([], { UPSTREAM_TIMEOUT_MS: '99999999999' }),
  serve(['--headers-timeout', '2000']),
  serve([], { HEADERS_TIMEOUT_MS: '0' }),
  serve(['--keep-alive-timeout', '70000']),
  serve([], { KEEP_ALIVE_TIMEOUT_MS: '3000000000' }),
  serve(['--revalidate-after', '60']),
  serve([], { REVALIDATE_AFTER: '2000001' }),
  serve(['--cache-key-ignore-params', 't, v,,']),
  serve([], { CACHE_KEY_IGNORE_PARAMS: 't' }),
  serve([], { CACHE_KEY_IGNORE_PARAMS: '' }),
  serve(['--dangerously-ignore-credential-params']),
  serve([], { DANGEROUSLY_IGNORE_CREDENTIAL_PARAMS: '1' }),
  serve(['--admin-token', 'flag-token']),
  serve([], { IMAGE_SIDECAR_ADMIN_TOKEN: 'env-token' }),
  serve([], { IMAGE_SIDECAR_ADMIN_TOKEN: '' }),
  serve([], { IMAGE_SIDECAR_SIGNING_KEY: 'key' }),
  serve([], { IMAGE_SIDECAR_SIGNING_KEY: '' }),
  serve([], { SHUTDOWN_DELAY_MS: '1000', SHUTDOWN_TIMEOUT_MS: '5000' }),
  serve([], { SHUTDOWN_DELAY_MS: '2147483647' }),
  serve([], { SHUTDOWN_TIMEOUT_MS: '0' }),
  serve([], { SHUTDOWN_DELAY_MS: '-1' }),
  serve([], { SHUTDOWN_TIMEOUT_MS: '' }),
  serve(['--nope']),
  serve(['--port']),
  serve(['--cache-strict=1']),
  serve(['extra']),
  serve(['--placeholders']),
  serve(['--port', '0', '--timeout', '0']),
  serve(['--timeout=0', '--upstream-timeout=0']),
  serve(['--workers', '0', '--metrics-port', '0']),
  serve(['--cache', 'memory://', '--frontend', 'http://a', '--timeout', '10', '--max-attempts', '2', '--queue-size', '5', '--concurrency', '2', '--hot-cache-size', '1024', '--workers', '2']),
  warm(['--urls', '/dev/null']),
  warm(['--help']),
  warm(['--pages', 'http://a/', 'http://a/b', 'http://a/c']),
  warm(['--sitemap', 'http://a/sitemap.xml', '--from', '.', '--target', 'http://sidecar', '--placeholders', '--dry-run']),
  warm(['--urls', '/dev/null', '--timeout', '2147483648']),
  warm(['--urls', '/dev/null'], { IMAGE_TIMEOUT_MS: '0' }),
  warm(['--urls', '/dev/null', '--workers', '2']),
  warm(['--urls', '/dev/null', '--admin-token', 't']),
  warm(['--urls', '/dev/null', '--port', '1']),
  warm(['--urls', '/dev/null', '--concurrency', '3', '--cache', 'memory://', '--config', CONFIG]),
  warm(['--urls', '/dev/null'], { PORT: 'abc', WORKERS: 'x', METRICS_PORT: 'y', SHUTDOWN_TIMEOUT_MS: '0' }),
  purge(['--help']),
  purge(['/a.jpg', '--target', 'http://sidecar']),
  purge(['/a.jpg', '/b.png', '--target', 'http://sidecar', '--admin-token', 't']),
  purge(['--prefix', '/p', '--target', 'http://sidecar'], { IMAGE_SIDECAR_ADMIN_TOKEN: 'env-token' }),
  purge(['--prefix', '/p', '--cache', 'memory://']),
  purge(['--all'], { IMAGE_CACHE_URL: 'memory://' }),
  purge(['--all', '--cache', 'memory://', '--cache-prefix', 'x:', '--next-version', '15', '--config', CONFIG]),
  purge([]),
  purge(['/a.jpg', '--all', '--cache', 'memory://']),
  purge(['--prefix', '/p', '--all', '--cache', 'memory://']),
  purge(['/a.jpg']),
  purge(['/a.jpg', '--target', 'http://x', '--cache', 'memory://']),
  purge(['/a.jpg', '--target', 'http://x'], { IMAGE_CACHE_URL: 'memory://' }),
  purge(['/a.jpg', '--target', 'http://x'], { IMAGE_CACHE_URL: '' }),
  purge(['/a.jpg', '--cache', 'memory://', '--timeout', '0']),
  purge(['/a.jpg', '--target', 'http://x', '--timeout', '0']),
  purge(['/a.jpg', '--cache', 'memory://'], { IMAGE_TIMEOUT_MS: '5', CONCURRENCY: '0' }),
  purge(['/a.jpg', '--cache', 'memory://', '--frontend', 'http://a']),
  purge(['/a.jpg', '--cache', 'memory://', '--dangerously-allow-local-ip']),
]

/** JSON with `undefined` kept visible and the temporary directory named the same on every run. */
function stable(value: unknown): unknown {
  const text = JSON.stringify(value, (_k, v: unknown) => (v === undefined ? '<undefined>' : v))
  return JSON.parse(text.replaceAll(dir, '<dir>'))
}

async function run([command, argv, env = {}]: Case): Promise<unknown> {
  const saved = { ...process.env }
  for (const name of VARIABLES) delete process.env[name]
  Object.assign(process.env, env)
  try {
    if (command === 'serve') {
      const settings = await serveSettings(argv)
      if (!settings.help && (argv.includes('auto') || env.WORKERS === 'auto')) return stable({ ...settings, workers: settings.workers === defaultConcurrency(readContainerLimits().cpus) ? 'auto' : settings.workers })
      return stable(settings)
    }
    if (command === 'warm') return stable(await warmSettings(argv))
    const settings = await purgeSettings(argv)
    if (settings.help) return stable(settings)
    const { storeOptions, ...rest } = settings
    const options = rest.target ? undefined : await storeOptions().catch((err: Error) => ({ error: err.message, name: err.name }))
    return stable({ ...rest, storeOptions: options })
  } catch (err) {
    const e = err as Error & { code?: string }
    // Node's own parseArgs messages are worded by the Node line: the code and the option named are what is kept.
    if (e.code?.startsWith('ERR_PARSE_ARGS')) return { code: e.code, option: /'(--?[\w-]+)/.exec(e.message)?.[1] ?? e.message }
    return stable({ error: e.message, name: e.name })
  } finally {
    for (const name of Object.keys(process.env)) if (!(name in saved)) delete process.env[name]
    Object.assign(process.env, saved)
  }
}

const label = ([command, argv, env]: Case) => `${command} ${argv.join(' ')}${env ? ` ${JSON.stringify(env)}` : ''}`.replaceAll(dir, '<dir>')

test('every case parses as recorded (values, defaults, errors)', async () => {
  const actual: Record<string, unknown> = {}
  for (const c of CASES) actual[label(c)] = await run(c)
  if (process.env.UPDATE_SNAPSHOT === '1') writeFileSync(SNAPSHOT, `${JSON.stringify(actual, null, 2)}\n`)
  const expected = JSON.parse(readFileSync(SNAPSHOT, 'utf8')) as Record<string, unknown>
  assert.deepEqual(Object.keys(actual), Object.keys(expected), 'the cases changed: record them again from a known-good parser')
  for (const key of Object.keys(expected)) assert.deepEqual(actual[key], expected[key], key)
})
