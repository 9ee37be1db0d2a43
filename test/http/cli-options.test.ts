/**
 * The real CLI checks every numeric option at start: out of its range (a timeout past setTimeout's
 * 2^31−1 ms would fire after 1 ms) it exits 1 before serving, naming the flag, the rule and the value.
 * And a next.config function gets Next's real defaults; whatever it throws stops the start cleanly.
 */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI } from '../helpers/cli.js'
import { freePort } from '../helpers/next-app.js'
import { waitUntil } from '../helpers/wait.js'

interface Exit {
  code: number | null
  stderr: string
}

/** Runs the CLI (`serve`, or `warm` when args start with it) until it exits; a CLI still running after 20 s fails the test. */
async function runToExit(args: string[], env: Record<string, string> = {}): Promise<Exit> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
  const exited = once(child, 'exit')
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  const [code] = (await exited) as [number | null]
  clearTimeout(timer)
  return { code, stderr }
}

const serveArgs = ['--host', '127.0.0.1', '--cache', 'memory://', '--frontend', 'http://127.0.0.1:9']

describe('numeric options out of range stop the start with one clear message', () => {
  const TIMER_MAX = 2 ** 31 - 1
  test('--timeout past 2^31−1 ms', async () => {
    const run = await runToExit([...serveArgs, '--port', String(await freePort()), '--timeout', String(TIMER_MAX + 1)])
    assert.equal(run.code, 1)
    assert.match(run.stderr, /^next-image-sidecar: --timeout: expected an integer from 1 to 2147483647 \(ms\), received "2147483648"\n$/)
  })
  test('UPSTREAM_TIMEOUT_MS past 2^31−1 ms is named by its flag and variable', async () => {
    const run = await runToExit([...serveArgs, '--port', String(await freePort())], { UPSTREAM_TIMEOUT_MS: '99999999999' })
    assert.equal(run.code, 1)
    assert.match(run.stderr, /--upstream-timeout \(UPSTREAM_TIMEOUT_MS\): expected an integer from 1 to 2147483647 \(ms\), received "99999999999"/)
  })
  const cases: Array<[string, string, RegExp]> = [
    ['--upstream-timeout', '2147483648', /--upstream-timeout: expected an integer from 1 to 2147483647 \(ms\), received "2147483648"/],
    ['--headers-timeout', '0', /--headers-timeout: expected an integer from 1 to 2147483647 \(ms\), received "0"/],
    ['--keep-alive-timeout', '3000000000', /--keep-alive-timeout: expected an integer from 1 to 2147483647 \(ms\), received "3000000000"/],
    ['--port', '70000', /--port: expected an integer from 1 to 65535, received "70000"/],
    ['--metrics-port', '65536', /--metrics-port: expected an integer from 1 to 65535, received "65536"/],
    ['--workers', '100000', /--workers: expected an integer from 1 to 256 or "auto", received "100000"/],
    ['--maximum-redirects', '21', /--maximum-redirects: expected an integer from 0 to 20, received "21"/],
    ['--concurrency', '0', /--concurrency: expected an integer from 1 to 1024, received "0"/],
    ['--queue-size', '1e9', /--queue-size: expected an integer from 1 to 1000000, received "1e9"/],
    ['--max-attempts', '1000', /--max-attempts: expected an integer from 1 to 20, received "1000"/],
    ['--cache-max-size', '99999999999999999999', /--cache-max-size: expected an integer from 1 to 9007199254740991 \(bytes\), received "99999999999999999999"/],
    ['--cache-max-entry-size', '-1', /--cache-max-entry-size: expected an integer from 1 to 9007199254740991 \(bytes\), received "-1"/],
    ['--hot-cache-size', '1.5', /--hot-cache-size: expected an integer from 0 to 9007199254740991 \(bytes\), received "1.5"/],
    ['--memory-limit', '1Mi', /--memory-limit: expected bytes \(268435456, 256Mi, 1Gi\) from 64Mi, received "1Mi"/],
  ]
  for (const [flag, value, message] of cases) {
    test(`${flag} ${value}`, async () => {
      const port = flag === '--port' ? [] : ['--port', String(await freePort())]
      const run = await runToExit([...serveArgs, ...port, `${flag}=${value}`])
      assert.equal(run.code, 1, run.stderr)
      assert.match(run.stderr, message)
    })
  }
  test('SHUTDOWN_TIMEOUT_MS past 2^31−1 ms', async () => {
    const run = await runToExit([...serveArgs, '--port', String(await freePort())], { SHUTDOWN_TIMEOUT_MS: String(TIMER_MAX + 1) })
    assert.equal(run.code, 1)
    assert.match(run.stderr, /SHUTDOWN_TIMEOUT_MS: expected an integer from 1 to 2147483647 \(ms\), received "2147483648"/)
  })
  test('warm checks the same options', async () => {
    const run = await runToExit(['warm', '--urls', '/dev/null', '--cache', 'memory://', '--timeout', String(TIMER_MAX + 1)])
    assert.equal(run.code, 1)
    assert.match(run.stderr, /--timeout: expected an integer from 1 to 2147483647 \(ms\), received "2147483648"/)
  })
  test('the largest timeout allowed starts and serves', async () => {
    const port = await freePort()
    const child = spawn(process.execPath, [CLI, ...serveArgs, '--port', String(port), '--timeout', String(TIMER_MAX), '--upstream-timeout', String(TIMER_MAX)], {
      env: { ...process.env, LOG_LEVEL: 'silent' },
      stdio: 'ignore',
    })
    try {
      await waitUntil(async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.ok === true, 'the sidecar to answer /healthz', 20_000)
    } finally {
      child.kill('SIGKILL')
    }
  })
})

function configFile(source: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'nis-cli-config-')), 'next.config.mjs')
  writeFileSync(file, source)
  return file
}

describe('a next.config function under the real CLI', () => {
  test('one extending defaultConfig.images.deviceSizes serves the added width', async () => {
    const config = configFile('export default (phase, { defaultConfig }) => ({ images: { deviceSizes: [...defaultConfig.images.deviceSizes, 4096] } })')
    const port = await freePort()
    const child = spawn(process.execPath, [CLI, ...serveArgs, '--port', String(port), '--config', config, '--next-version', '16'], {
      env: { ...process.env, LOG_LEVEL: 'silent' },
      stdio: 'ignore',
    })
    try {
      const ask = (w: number) => fetch(`http://127.0.0.1:${port}/_next/image?url=%2Fa.png&w=${w}&q=75`).catch(() => undefined)
      await waitUntil(async () => (await ask(640)) !== undefined, 'the sidecar to answer', 20_000)
      // Allowed widths get as far as the (closed) frontend; a width not in the config is refused first.
      assert.notEqual(await (await ask(4096))!.text(), '"w" parameter (width) of 4096 is not allowed')
      assert.notEqual(await (await ask(3840))!.text(), '"w" parameter (width) of 3840 is not allowed')
      assert.equal(await (await ask(4000))!.text(), '"w" parameter (width) of 4000 is not allowed')
    } finally {
      child.kill('SIGKILL')
    }
  })
  test('one that throws a TypeError stops the start with a config error, not a stack trace', async () => {
    const config = configFile('export default (phase, { defaultConfig }) => ({ images: { deviceSizes: [...defaultConfig.missing.deviceSizes] } })')
    const run = await runToExit([...serveArgs, '--port', String(await freePort()), '--config', config])
    assert.equal(run.code, 1)
    assert.match(run.stderr, /^next-image-sidecar: --config: .*next\.config\.mjs failed: TypeError: /)
    assert.doesNotMatch(run.stderr, /\n\s+at /)
  })
})
