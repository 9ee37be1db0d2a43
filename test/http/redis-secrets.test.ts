/**
 * A Redis password never reaches the output: not the cluster primary's start line, not a worker's
 * logs, not a configuration error on stderr. Runs the real CLI (dist/, built by `npm run build`).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { CLI } from '../helpers/cli.js'
import { freePort } from '../helpers/next-app.js'
import { waitUntil } from '../helpers/wait.js'

const SECRET = 'S3cretPass'

/** Runs the CLI with every log line on; resolves with all it printed once `until` holds on it, or once it exits. */
async function run(args: string[], until: (out: string) => boolean): Promise<{ out: string; code: number | null }> {
  const child = spawn(process.execPath, [CLI, '--host', '127.0.0.1', '--port', String(await freePort()), '--frontend', 'http://127.0.0.1:9', ...args], {
    env: { ...process.env, LOG_LEVEL: 'debug' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d))
  child.stderr.on('data', (d: Buffer) => (out += d))
  const exited = once(child, 'exit')
  try {
    await waitUntil(() => child.exitCode !== null || until(out), 'the CLI to print what the test waits for', 30_000, 50)
  } finally {
    if (child.exitCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  }
  return { out, code: child.exitCode }
}

test('--workers 2 with a password in --cache: the primary and the workers never print it', async () => {
  const { out } = await run(['--cache', `redis://default:${SECRET}@127.0.0.1:1`, '--workers', '2'], (o) => (o.match(/next-image-sidecar listening/g) ?? []).length >= 2)
  assert.match(out, /cluster starting/)
  assert.match(out, /default:\*\*\*@127\.0\.0\.1:1/)
  assert.doesNotMatch(out, new RegExp(SECRET))
})

for (const url of [`redis://default:${SECRET}@127.0.0.1:99999`, `redis://default:${SECRET}/x@[bad:1`, `redis+cluster://default:${SECRET}@127.0.0.1`, `redis+sentinel://default:${SECRET}@h:1`, `redis:/default:${SECRET}@h:1`]) {
  test(`a refused cache URL is reported without its password: ${url.replace(SECRET, '…')}`, async () => {
    const { out, code } = await run(['--cache', url], () => false)
    assert.equal(code, 1)
    assert.match(out, /--cache/)
    assert.doesNotMatch(out, new RegExp(SECRET))
  })
}
