/**
 * The real command in pod-sized cgroups (v1 memory + cpu controllers, as Kubernetes makes them for
 * `limits.memory` and `limits.cpu`): a burst of large images never gets it OOM-killed, and its
 * defaults follow the limits.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { PodCgroup } from '../helpers/cgroup.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { freePort, REPO } from '../helpers/next-app.js'
import { metric } from '../helpers/metrics.js'
import { waitUntil } from '../helpers/wait.js'

const BIN = join(REPO, 'bin/next-image-sidecar')
const MiB = 1024 ** 2

let upstream: UpstreamServer

before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

interface Running {
  url: string
  child: ChildProcess
  lines: Array<Record<string, unknown>>
  stop(): Promise<void>
}

/** The next-image-sidecar command inside `group`, on its defaults (SQLite in a fresh directory). */
async function startInGroup(group: PodCgroup, args: string[] = []): Promise<Running> {
  const port = await freePort()
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-pod-')), 'cache.sqlite')}`
  const child = group.spawn(BIN, ['--host', '127.0.0.1', '--port', String(port), '--frontend', upstream.url, '--cache', cache, ...args], {
    env: { ...process.env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const lines: Array<Record<string, unknown>> = []
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      const parsed = JSON.parse(line) as Record<string, unknown>
      if (parsed.msg !== 'request') lines.push(parsed)
    } catch {}
  })
  const url = `http://127.0.0.1:${port}`
  await waitUntil(async () => {
    if (child.exitCode !== null) throw new Error(`the sidecar exited with ${child.exitCode}`)
    return fetch(`${url}/healthz`).then((r) => r.ok, () => false)
  }, 'the sidecar in the cgroup to answer', 30_000, 50)
  return {
    url,
    child,
    lines,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    },
  }
}

test('256 MiB, 1 CPU: a burst of 60 distinct large variants at 32 concurrent requests — no OOM kill, every answer 200 or 503 with Retry-After', { timeout: 240_000 }, async () => {
  const group = PodCgroup.create(256 * MiB, 1)
  const sidecar = await startInGroup(group)
  try {
    const files = ['large/elephants-3840x2160.jpg', 'large/truchet-dark-4096.webp', 'large/float-into-mate.png', 'photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/aqua.jpg', 'photo-jpeg/aqua-cmyk.jpg', 'photo-jpeg/ladybird-exif-rotate-6.jpg', 'photo-jpeg/green-meadow.jpg', 'photo-jpeg/garden-progressive.jpg']
    const variants = files.flatMap((f) => [640, 750, 1080, 1920, 2048, 3840].map((w) => ({ path: `/_next/image?url=${encodeURIComponent(`/corpus/${f}`)}&w=${w}&q=75`, accept: 'image/avif,image/webp,*/*' })))
    const answers: Array<{ status: number; retryAfter: string | null } | { error: string }> = []
    let next = 0
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < variants.length) {
          const { path, accept } = variants[next++]!
          try {
            const res = await fetch(`${sidecar.url}${path}`, { headers: { accept }, signal: AbortSignal.timeout(120_000) })
            await res.arrayBuffer()
            answers.push({ status: res.status, retryAfter: res.headers.get('retry-after') })
          } catch (err) {
            answers.push({ error: String(err) })
          }
        }
      }),
    )
    const peak = group.peakBytes
    assert.equal(group.oomKills, 0, `OOM-killed (peak ${Math.round(peak / MiB)} MiB)`)
    assert.equal(sidecar.child.exitCode, null, 'the sidecar is still running')
    const unexpected = answers.filter((a) => 'error' in a || (a.status !== 200 && !(a.status === 503 && a.retryAfter === '1')))
    assert.deepEqual(unexpected, [])
    const served = answers.filter((a) => 'status' in a && a.status === 200).length
    assert.ok(served >= 40, `only ${served} of 60 served`)
    process.stderr.write(`pod 256 MiB: ${served} × 200, ${60 - served} × 503, peak ${Math.round(peak / MiB)} MiB\n`)
  } finally {
    await sidecar.stop()
    await group.remove()
  }
})

test('the defaults follow the cgroup: 384 MiB and 1 CPU → one transform, one libvips thread, one worker for --workers auto, a budget within the limit', { timeout: 60_000 }, async () => {
  const group = PodCgroup.create(384 * MiB, 1)
  const sidecar = await startInGroup(group, ['--workers', 'auto'])
  try {
    const text = await (await fetch(`${sidecar.url}/metrics`)).text()
    assert.equal(metric(text, 'next_image_sidecar_limit_cpus'), 1)
    assert.equal(metric(text, 'next_image_sidecar_limit_memory_bytes'), 384 * MiB)
    assert.equal(metric(text, 'next_image_sidecar_concurrency'), 1)
    assert.equal(metric(text, 'next_image_sidecar_libvips_threads'), 1)
    const budget = metric(text, 'next_image_sidecar_memory_budget_bytes')
    assert.ok(budget > 64 * MiB && budget < 384 * MiB - 64 * MiB, `budget ${budget / MiB} MiB`)
    // One process: --workers auto counted the quota's CPU, not the host's cores.
    const limits = sidecar.lines.find((l) => l.msg === 'limits')!
    assert.equal(limits.limitsFrom, 'cgroup v1')
    assert.equal(limits.concurrency, 1)
    assert.equal(limits.allocator === 'jemalloc' || String(limits.allocator).startsWith('glibc (MALLOC_ARENA_MAX='), true, `allocator ${String(limits.allocator)}`)
    assert.equal(sidecar.lines.filter((l) => l.msg === 'next-image-sidecar cluster starting').length, 0)
  } finally {
    await sidecar.stop()
    await group.remove()
  }
})
