/**
 * The real CLI chooses the Next line from the app it is pointed at, says which in its log, serves
 * that line's rules, and refuses a Next it does not reproduce before serving anything.
 */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { CLI } from '../helpers/cli.js'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { freePort, NEXT_LINES, NEXT_PACKAGES } from '../helpers/next-app.js'
import { corpusFile } from '../helpers/upstream-server.js'
import { waitUntil } from '../helpers/wait.js'

/** An app directory with a next.config and, when given, a `next` package of that version. */
function app(next: { link: string } | { version: string } | undefined, config = 'export default {}'): string {
  const dir = mkdtempSync(join(tmpdir(), 'nis-version-'))
  writeFileSync(join(dir, 'next.config.mjs'), config)
  if (next) {
    mkdirSync(join(dir, 'node_modules'), { recursive: true })
    if ('link' in next) symlinkSync(next.link, join(dir, 'node_modules/next'), 'dir')
    else {
      mkdirSync(join(dir, 'node_modules/next'))
      writeFileSync(join(dir, 'node_modules/next/package.json'), JSON.stringify({ name: 'next', version: next.version }))
    }
  }
  return join(dir, 'next.config.mjs')
}

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs the CLI until it exits, or (`until`) until its log has that line, then stops it. */
async function runCli(args: string[], env: Record<string, string> = {}, until?: RegExp): Promise<Run> {
  const port = await freePort()
  const child = spawn(process.execPath, [CLI, '--host', '127.0.0.1', '--port', String(port), '--cache', 'memory://', ...args], {
    env: { ...process.env, LOG_LEVEL: 'info', NEXT_VERSION: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const run: Run = { code: null, stdout: '', stderr: '' }
  child.stdout!.on('data', (c: Buffer) => (run.stdout += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (run.stderr += c.toString()))
  const exited = once(child, 'exit')
  if (until) {
    await waitUntil(() => until.test(run.stdout) || child.exitCode !== null, `the log line ${until}`, 20_000)
    child.kill('SIGTERM')
  }
  const [code] = await exited
  run.code = until ? null : (code as number | null)
  return run
}

const profileLine = (stdout: string) =>
  stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .find((entry) => typeof entry.msg === 'string' && (entry.msg as string).startsWith('serving Next.js'))

const undetectedWarning = (stdout: string) =>
  stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .find((entry) => /not detected/.test(String(entry.msg)))

describe('the CLI chooses the Next line of the app', () => {
  test('an app on Next 15.5 is served with the 15 profile, detected', async () => {
    const run = await runCli(['--config', app({ link: NEXT_PACKAGES[15] })], {}, /serving Next\.js/)
    const line = profileLine(run.stdout)
    assert.equal(line?.nextVersion, 15)
    assert.equal(line?.from, 'detected')
    assert.match(String(line?.installed), /^15\.5\./)
  })
  test('an app on Next 16.5 is served with 16.5.0’s semantics, and the log names the encoder', async () => {
    const run = await runCli(['--config', app({ link: NEXT_LINES['16.5'] })], {}, /serving Next\.js/)
    const line = profileLine(run.stdout)
    assert.equal(line?.msg, 'serving Next.js 16.5 image semantics')
    assert.deepEqual([line?.nextVersion, line?.line, line?.semanticsOf, line?.from], [16, '16.5', 'next@16.5.0', 'detected'])
    assert.match(String(line?.installed), /^16\.5\./)
    assert.match(String(line?.encoder), /^sharp 0\.35\.\d+ \(libvips /)
  })
  test('an app on Next 16.4 keeps 16.4.6’s semantics', async () => {
    const run = await runCli(['--config', app({ link: NEXT_LINES['16.4'] })], {}, /serving Next\.js/)
    const line = profileLine(run.stdout)
    assert.deepEqual([line?.nextVersion, line?.line, line?.semanticsOf, line?.installed], [16, '16.4', 'next@16.4.6', '16.4.6'])
  })
  test('an app on 16.0–16.4 and one on a later 16 minor, by version alone', async () => {
    for (const [version, line] of [['16.0.3', '16.4'], ['16.3.0', '16.4'], ['16.5.2', '16.5'], ['16.6.0', '16.5']]) {
      const run = await runCli(['--config', app({ version })], {}, /serving Next\.js/)
      assert.equal(profileLine(run.stdout)?.line, line, version)
    }
  })
  test('--next-version 16.4 and NEXT_VERSION=16.4 choose the 16.4 line; 16 is the newest 16 line', async () => {
    assert.equal(profileLine((await runCli(['--config', app({ link: NEXT_LINES['16.5'] }), '--next-version', '16.4'], {}, /serving Next\.js/)).stdout)?.line, '16.4')
    assert.equal(profileLine((await runCli(['--config', app(undefined)], { NEXT_VERSION: '16.4' }, /serving Next\.js/)).stdout)?.line, '16.4')
    assert.equal(profileLine((await runCli(['--config', app(undefined)], { NEXT_VERSION: '16' }, /serving Next\.js/)).stdout)?.line, '16.5')
  })
  test('experimental.imgOptSafeMode on 16.5: a warning naming the encoder and the formats offered', async () => {
    const run = await runCli(['--config', app({ link: NEXT_LINES['16.5'] }, "export default { images: { formats: ['image/avif', 'image/webp'] }, experimental: { imgOptSafeMode: true } }")], {}, /imgOptSafeMode/)
    const warning = run.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => /imgOptSafeMode/.test(String(e.msg)))
    assert.equal(warning?.level, 40)
    assert.deepEqual(warning?.formats, ['image/webp'])
    assert.match(String(warning?.encoder), /^sharp /)
  })
  test('--next-version wins over the detected package', async () => {
    const run = await runCli(['--config', app({ link: NEXT_PACKAGES[16] }), '--next-version', '15'], {}, /serving Next\.js/)
    const line = profileLine(run.stdout)
    assert.equal(line?.nextVersion, 15)
    assert.equal(line?.from, '--next-version')
  })
  test('NEXT_VERSION is read when there is no flag', async () => {
    const run = await runCli(['--config', app(undefined)], { NEXT_VERSION: '15' }, /serving Next\.js/)
    assert.equal(profileLine(run.stdout)?.from, 'NEXT_VERSION')
  })
  test('no next package beside the config: a loud warning that 16 is the default and how to set the line', async () => {
    const run = await runCli(['--config', app(undefined)], {}, /serving Next\.js/)
    const warning = undetectedWarning(run.stdout)
    assert.equal(warning?.level, 40)
    assert.match(String(warning?.msg), /defaults? to|by default/)
    assert.match(String(warning?.msg), /Next 16\.5/)
    assert.match(String(warning?.msg), /NEXT_VERSION/)
    assert.match(String(warning?.msg), /--next-version/)
    assert.equal(profileLine(run.stdout)?.from, 'default')
  })
  test('a detected or a given line: no such warning', async () => {
    for (const [args, env] of [
      [['--config', app({ link: NEXT_PACKAGES[16] })], {}],
      [['--config', app(undefined)], { NEXT_VERSION: '16' }],
    ] as const) {
      const run = await runCli([...args], env, /serving Next\.js/)
      assert.equal(undetectedWarning(run.stdout), undefined)
    }
  })
  test('an app on Next 15.4 is refused before serving, naming 15.5', async () => {
    const run = await runCli(['--config', app({ version: '15.4.7' })])
    assert.equal(run.code, 1)
    assert.match(run.stderr, /Next\.js 15\.4\.7 is not supported.*15\.5/)
  })
  test('--next-version 14 is refused', async () => {
    const run = await runCli(['--config', app(undefined), '--next-version', '14'])
    assert.equal(run.code, 1)
    assert.match(run.stderr, /--next-version: Next\.js 14 is not supported/)
  })
  test('a Next 15 config with dangerouslyAllowLocalIP is refused as Next 15 refuses it', async () => {
    const run = await runCli(['--config', app({ link: NEXT_PACKAGES[15] }, 'export default { images: { dangerouslyAllowLocalIP: true } }')])
    assert.equal(run.code, 1)
    assert.match(run.stderr, /images configuration for Next\.js 15[\s\S]*dangerouslyAllowLocalIP/)
  })
})

describe('the chosen line’s rules are served', () => {
  test('a relative source that redirects: followed on the 16.5 line, a 500 on the 16.4 line', async () => {
    const png = corpusFile('png/chelsea.png')
    const frontend = createServer((req, res) => {
      if (req.url === '/moved.png') return void res.writeHead(307, { location: '/chelsea.png' }).end()
      if (req.url === '/chelsea.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(png)
      res.writeHead(404).end()
    }).listen(0, '127.0.0.1')
    await once(frontend, 'listening')
    try {
      for (const [next, status] of [[NEXT_LINES['16.5'], 200], [NEXT_LINES['16.4'], 500]] as const) {
        const port = await freePort()
        const child = spawn(process.execPath, [CLI, '--host', '127.0.0.1', '--port', String(port), '--cache', 'memory://', '--config', app({ link: next }), '--frontend', `http://127.0.0.1:${(frontend.address() as AddressInfo).port}`], {
          env: { ...process.env, LOG_LEVEL: 'silent', NEXT_VERSION: '' },
          stdio: 'ignore',
        })
        try {
          let res: Response | undefined
          await waitUntil(async () => (res = await fetch(`http://127.0.0.1:${port}/_next/image?url=%2Fmoved.png&w=64&q=75`, { headers: { accept: 'image/webp' } }).catch(() => undefined)) !== undefined, 'the sidecar to answer', 20_000)
          assert.equal(res!.status, status, next)
          if (status === 200) assert.equal(res!.headers.get('content-type'), 'image/webp')
          await res!.arrayBuffer()
        } finally {
          child.kill('SIGKILL')
        }
      }
    } finally {
      frontend.close()
    }
  })

  test('w=16 is a default width on Next 15 and refused on Next 16', async () => {
    for (const [major, status] of [[15, 'not 400'], [16, 400]] as const) {
      const port = await freePort()
      const child = spawn(process.execPath, [CLI, '--host', '127.0.0.1', '--port', String(port), '--cache', 'memory://', '--config', app({ link: NEXT_PACKAGES[major] }), '--frontend', 'http://127.0.0.1:9'], {
        env: { ...process.env, LOG_LEVEL: 'silent', NEXT_VERSION: '' },
        stdio: 'ignore',
      })
      try {
        let res: Response | undefined
        await waitUntil(
          async () => {
            res = await fetch(`http://127.0.0.1:${port}/_next/image?url=%2Fa.png&w=16&q=80`).catch(() => undefined)
            return res !== undefined
          },
          `the Next ${major} sidecar to answer`,
          20_000,
        )
        const body = await res!.text()
        if (status === 400) {
          assert.equal(res!.status, 400)
          assert.equal(body, '"w" parameter (width) of 16 is not allowed')
        } else {
          // Valid on 15 (width 16, any quality): it gets as far as fetching from the (closed) frontend.
          assert.notEqual(body, '"w" parameter (width) of 16 is not allowed')
          assert.notEqual(body, '"q" parameter (quality) of 80 is not allowed')
        }
      } finally {
        child.kill('SIGKILL')
      }
    }
  })
})
