/**
 * The demo's process supervision (scripts/process-tree.mjs) with real process trees: a shell that starts
 * a server and waits, as `npx next start` does, so a signal to the shell alone would orphan the server.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { REPO } from '../helpers/next-app.js'
import { waitUntil } from '../helpers/wait.js'
// @ts-expect-error: a plain .mjs script, without types
import { supervise } from '../../scripts/process-tree.mjs'

const MODULE = join(REPO, 'scripts/process-tree.mjs')

/** `sh -c` starting a long-lived node that prints its pid, then waiting: the shape of `npx next start`. */
const tree = (ignoreTerm = false) => ({
  command: 'sh',
  args: ['-c', `${JSON.stringify(process.execPath)} -e 'console.log("grandchild " + process.pid); ${ignoreTerm ? "process.on(\"SIGTERM\", () => {});" : ''} setInterval(() => {}, 1000)' & wait`],
})

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Reads "grandchild PID" lines from a stream until `count` were seen. */
function grandchildren(stream: NodeJS.ReadableStream, count: number): Promise<number[]> {
  const pids: number[] = []
  return new Promise((resolve) => {
    createInterface({ input: stream }).on('line', (line) => {
      const match = /^grandchild (\d+)$/.exec(line)
      if (match) pids.push(Number(match[1]))
      if (pids.length === count) resolve(pids)
    })
  })
}

test('when one command exits 1, every other tree is stopped, grandchildren included, and the code is 1', async () => {
  let started: Array<{ name: string; pid: number; child: ChildProcess }> = []
  const result: Promise<{ code: number; signal?: string }> = supervise(
    [
      { name: 'server', ...tree(), options: { stdio: 'ignore' } },
      // Exits 1 when told to (a line on stdin): the sidecar failing while next start runs.
      { name: 'failing', command: process.execPath, args: ['-e', 'process.stdin.once("data", () => process.exit(1))'], options: { stdio: ['pipe', 'ignore', 'inherit'] } },
    ],
    { graceMs: 5000, onStart: (children: typeof started) => (started = children) },
  )
  const [server] = await childrenOf(started[0]!.pid)
  assert.ok(alive(server!))
  started[1]!.child.stdin!.write('fail\n')
  assert.deepEqual(await result, { code: 1, signal: undefined })
  assert.ok(!alive(server!), 'the server started by the other tree’s shell is gone')
})

/** The pids of the processes whose parent is `pid` (from the kernel). */
async function childrenOf(pid: number): Promise<number[]> {
  let pids: number[] = []
  await waitUntil(() => {
    pids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
    return pids.length > 0
  }, `a child of ${pid}`, 10_000)
  return pids
}

test('SIGTERM to the supervising process stops every tree and it exits 0', async () => {
  const driver = spawn(process.execPath, ['--input-type=module', '-e', `
    import { supervise } from ${JSON.stringify(MODULE)}
    const tree = ${JSON.stringify(tree())}
    process.exit((await supervise([{ name: 'a', ...tree }, { name: 'b', ...tree }], { graceMs: 5000 })).code)
  `], { stdio: ['ignore', 'pipe', 'inherit'] })
  const pids = await grandchildren(driver.stdout!, 2)
  const exited = once(driver, 'exit')
  driver.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 0)
  for (const pid of pids) assert.ok(!alive(pid), `grandchild ${pid} is gone`)
})

test('a tree that ignores SIGTERM is killed after the grace period, and that counts as a failure', async () => {
  const driver = spawn(process.execPath, ['--input-type=module', '-e', `
    import { supervise } from ${JSON.stringify(MODULE)}
    process.exit((await supervise([{ name: 'stubborn', ...${JSON.stringify(tree(true))} }], { graceMs: 300 })).code)
  `], { stdio: ['ignore', 'pipe', 'inherit'] })
  const [pid] = await grandchildren(driver.stdout!, 1)
  const exited = once(driver, 'exit')
  driver.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 1)
  assert.ok(!alive(pid!))
})

test('a command that cannot be started ends the run with 127 and stops the other trees', async () => {
  const driver = spawn(process.execPath, ['--input-type=module', '-e', `
    import { supervise } from ${JSON.stringify(MODULE)}
    const tree = ${JSON.stringify(tree())}
    const onStart = (children) => console.log('server group ' + children[1].pid)
    process.exit((await supervise([{ name: 'missing', command: '/nonexistent/next-image-sidecar', options: { stdio: 'ignore' } }, { name: 'server', ...tree, options: { stdio: 'ignore' } }], { graceMs: 5000, onStart })).code)
  `], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  driver.stdout!.on('data', (c: Buffer) => (out += c))
  driver.stderr!.on('data', (c: Buffer) => (err += c))
  const [code] = await once(driver, 'exit')
  assert.equal(code, 127, err)
  const group = Number(/server group (\d+)/.exec(out)?.[1])
  assert.ok(group > 0, out)
  assert.throws(() => process.kill(-group, 0), { code: 'ESRCH' }, 'the server tree is still running')
})
