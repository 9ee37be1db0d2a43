/**
 * `--workers N` on Linux: every worker binds the port itself (SO_REUSEPORT), so the primary accepts and
 * relays no connection; NODE_CLUSTER_SCHED_POLICY keeps node:cluster's own distribution.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { freePort } from '../helpers/next-app.js'
import { CLI, stopChild } from '../helpers/cli.js'
import { image } from '../helpers/image-url.js'
import { waitUntil } from '../helpers/wait.js'

const linux = process.platform === 'linux'
let upstream: UpstreamServer

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

/** Inodes of the sockets listening on `port` (IPv4 and IPv6), from /proc/net. */
function listeningInodes(port: number): Set<string> {
  const inodes = new Set<string>()
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.trim().split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/)
      // local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 is the inode.
      if (fields[3] === '0A' && parseInt(fields[1]!.split(':')[1]!, 16) === port) inodes.add(fields[9]!)
    }
  }
  return inodes
}

/** How many of `inodes` the process `pid` holds open. */
function socketsHeldBy(pid: number, inodes: Set<string>): number {
  let held = 0
  let fds: string[] = []
  try {
    fds = readdirSync(`/proc/${pid}/fd`)
  } catch {
    return 0 // a worker that exited meanwhile
  }
  for (const fd of fds) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`)
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1]
      if (inode && inodes.has(inode)) held++
    } catch {
      // closed meanwhile
    }
  }
  return held
}

function childrenOf(pid: number): number[] {
  const children: number[] = []
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      children.push(...readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number))
    } catch {
      // a thread that ended meanwhile
    }
  }
  return children
}

async function startCluster(env: Record<string, string> = {}): Promise<{ url: string; port: number; child: ChildProcess }> {
  const port = await freePort()
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-cluster-listen-')), 'cache.sqlite')}`
  const child = spawn(process.execPath, [CLI, '--host', '127.0.0.1', '--port', String(port), '--frontend', upstream.url, '--cache', cache, '--workers', '2'], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  return { url: `http://127.0.0.1:${port}`, port, child }
}

async function stop(child: ChildProcess): Promise<void> {
  await stopChild(child)
}

/** Who holds the port's listening sockets once both workers listen: [primary, each worker]. */
async function holders(c: { port: number; child: ChildProcess }, expected: (primary: number, workers: number[]) => boolean): Promise<{ primary: number; workers: number[] }> {
  let last = { primary: -1, workers: [] as number[] }
  await waitUntil(
    () => {
      const inodes = listeningInodes(c.port)
      const workers = childrenOf(c.child.pid!)
      last = { primary: socketsHeldBy(c.child.pid!, inodes), workers: workers.map((w) => socketsHeldBy(w, inodes)) }
      return workers.length === 2 && expected(last.primary, last.workers)
    },
    'the expected listening sockets',
    30_000,
  ).catch(() => {})
  return last
}

test('with --workers 2, each worker holds a listening socket of its own and the primary none', { skip: !linux && 'SO_REUSEPORT spreading is Linux only' }, async () => {
  const c = await startCluster()
  try {
    const seen = await holders(c, (primary, workers) => primary === 0 && workers.every((n) => n === 1))
    assert.deepEqual(seen, { primary: 0, workers: [1, 1] }, 'the primary accepts connections and relays them to the workers')
    // Every request on a new connection: the kernel spreads them, all are answered.
    const path = image('/corpus/photo-jpeg/aqua.jpg', 640, 75)
    const statuses = await Promise.all(Array.from({ length: 16 }, () => fetch(`${c.url}${path}`, { headers: { accept: 'image/webp', connection: 'close' } }).then(async (r) => (await r.arrayBuffer(), r.status))))
    assert.deepEqual(new Set(statuses), new Set([200]))
  } finally {
    await stop(c.child)
  }
})

test('NODE_CLUSTER_SCHED_POLICY=rr keeps node:cluster’s round robin: the primary holds the one listening socket', { skip: !linux && 'Linux only' }, async () => {
  const c = await startCluster({ NODE_CLUSTER_SCHED_POLICY: 'rr' })
  try {
    const seen = await holders(c, (primary, workers) => primary === 1 && workers.every((n) => n === 0))
    assert.deepEqual(seen, { primary: 1, workers: [0, 0] })
  } finally {
    await stop(c.child)
  }
})
