/**
 * `npm run demo` (scripts/demo.mjs) for real: it builds the example app and runs `next start` and the
 * sidecar. Stopping it must stop both servers (not orphan `next start` behind `npx`), and a server
 * that fails must make the demo fail with its code.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { freePort, REPO } from '../helpers/next-app.js'
import { waitUntil } from '../helpers/wait.js'

const answers = async (port: number) => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined)) !== undefined

function startDemo(appPort: number, sidecarPort: number) {
  return spawn(process.execPath, [join(REPO, 'scripts/demo.mjs')], {
    // Its own build directory, so the demo's build does not touch another test's.
    env: { ...process.env, APP_PORT: String(appPort), SIDECAR_PORT: String(sidecarPort), EXAMPLE_DIST_DIR: '.next-e2e-demo', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
}

test('SIGTERM to the demo stops next start and the sidecar, and it exits 0', async (t) => {
  const [appPort, sidecarPort] = [await freePort(), await freePort()]
  const demo = startDemo(appPort, sidecarPort)
  t.after(() => void (demo.exitCode === null && demo.kill('SIGKILL')))
  await waitUntil(async () => {
    if (demo.exitCode !== null) throw new Error(`the demo exited with ${demo.exitCode}`)
    return (await answers(appPort)) && (await answers(sidecarPort))
  }, 'the app and the sidecar to answer', 240_000, 500)
  const exited = once(demo, 'exit')
  demo.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 0)
  // Nothing still serves: the demo waited for every process it started.
  assert.equal(await answers(appPort), false, 'next start is still serving')
  assert.equal(await answers(sidecarPort), false)
})

// A process manager signals the command it started: `npm run demo`, whose script runs under sh. Without
// `exec` the shell dies and leaves the demo, next start and the sidecar running (checked: they stayed).
// This one rebuilds dist/ as the README's command does (no other test runs meanwhile: --test-concurrency=1).
test('SIGTERM to `npm run demo` reaches the demo: next start and the sidecar stop, npm exits 0', async (t) => {
  const [appPort, sidecarPort] = [await freePort(), await freePort()]
  const npm = spawn('npm', ['run', 'demo'], {
    cwd: REPO,
    env: { ...process.env, APP_PORT: String(appPort), SIDECAR_PORT: String(sidecarPort), EXAMPLE_DIST_DIR: '.next-e2e-demo', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
    detached: true,
  })
  // Whatever happens, nothing of it outlives the test: its whole process group goes.
  t.after(() => void (npm.exitCode === null && process.kill(-npm.pid!, 'SIGKILL')))
  await waitUntil(async () => {
    if (npm.exitCode !== null) throw new Error(`npm run demo exited with ${npm.exitCode}`)
    return (await answers(appPort)) && (await answers(sidecarPort))
  }, 'the app and the sidecar to answer', 300_000, 500)
  const exited = once(npm, 'exit')
  npm.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 0)
  await waitUntil(async () => !(await answers(appPort)) && !(await answers(sidecarPort)), 'next start and the sidecar to stop', 15_000, 100)
})

test('when the sidecar exits 1 (its port is taken), the demo stops next start and exits 1', async () => {
  const [appPort, sidecarPort] = [await freePort(), await freePort()]
  const blocker = createServer().listen(sidecarPort, '0.0.0.0')
  await once(blocker, 'listening')
  try {
    const demo = startDemo(appPort, sidecarPort)
    const [code] = await once(demo, 'exit')
    assert.equal(code, 1)
    assert.equal(await answers(appPort), false, 'next start is still serving')
  } finally {
    blocker.close()
  }
})
