/**
 * A burst the pod can finish is served, not refused. The real command in a 256 MiB / 1 CPU cgroup,
 * 44 distinct cold variants of large photos at 32 concurrent requests: waits for the sidecar's own
 * capacity end at the job's deadline (30 s), never at the upstream's 7 s timer, so every image the
 * pod can hold is answered 200; the only refusals are images estimated beyond what the pod may hold.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cgroupsAvailable, PodCgroup } from '../helpers/cgroup.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { freePort, REPO } from '../helpers/next-app.js'
import { waitUntil } from '../helpers/wait.js'
import { testSidecar } from '../helpers/sidecar.js'
import { metric } from '../helpers/metrics.js'

const BIN = join(REPO, 'bin/next-image-sidecar')
const MiB = 1024 ** 2
const FILES = ['large/elephants-3840x2160.jpg', 'large/truchet-dark-4096.webp', 'large/float-into-mate.png', 'photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/aqua.jpg', 'photo-jpeg/aqua-cmyk.jpg', 'photo-jpeg/ladybird-exif-rotate-6.jpg', 'photo-jpeg/green-meadow.jpg', 'photo-jpeg/garden-progressive.jpg', 'photo-jpeg/rocket.jpg']
const WIDTHS = [640, 1080, 1920, 3840]

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(() => upstream.close())

test('256 MiB, 1 CPU: 44 distinct cold large variants at 32 concurrent requests are served; only images estimated beyond the pod are refused', { skip: !cgroupsAvailable() && 'needs root and cgroup v1', timeout: 240_000 }, async () => {
  const group = PodCgroup.create(256 * MiB, 1)
  const port = await freePort()
  const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-burst-')), 'cache.sqlite')}`
  const child = group.spawn(BIN, ['--host', '127.0.0.1', '--port', String(port), '--frontend', upstream.url, '--cache', cache], { stdio: ['ignore', 'ignore', 'inherit'] })
  const url = `http://127.0.0.1:${port}`
  try {
    await waitUntil(async () => {
      if (child.exitCode !== null) throw new Error(`the sidecar exited with ${child.exitCode}`)
      return fetch(`${url}/healthz`).then((r) => r.ok, () => false)
    }, 'the sidecar in the cgroup to answer', 30_000, 50)

    const variants = FILES.flatMap((f) => WIDTHS.map((w) => `/_next/image?url=${encodeURIComponent(`/corpus/${f}`)}&w=${w}&q=75`))
    const answers: Array<{ path: string; status: number; body: string; retryAfter: string | null } | { path: string; error: string }> = []
    let next = 0
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < variants.length) {
          const path = variants[next++]!
          try {
            const res = await fetch(`${url}${path}`, { headers: { accept: 'image/avif,image/webp,*/*' }, signal: AbortSignal.timeout(120_000) })
            const body = Buffer.from(await res.arrayBuffer())
            answers.push({ path, status: res.status, body: res.status === 200 ? '' : body.toString(), retryAfter: res.headers.get('retry-after') })
          } catch (err) {
            answers.push({ path, error: String(err) })
          }
        }
      }),
    )
    assert.equal(group.oomKills, 0, 'OOM-killed')
    const served = answers.filter((a) => 'status' in a && a.status === 200).length
    const unexpected = answers.filter((a) => 'error' in a || (a.status !== 200 && !(a.status === 503 && a.retryAfter !== null && a.body.includes('needs more memory than this process may use'))))
    process.stderr.write(`burst in 256 MiB / 1 CPU: ${served} of ${variants.length} served\n`)
    assert.deepEqual(unexpected, [], 'every refusal is an image estimated beyond the pod')
    assert.ok(served >= Math.ceil(variants.length * 0.95), `only ${served} of ${variants.length} served`)
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    }
    await group.remove()
  }
})

test('a wait for a source slot is not cut by the upstream timeout: more large variants than one upstream timeout can transform are all served', { timeout: 120_000 }, async (t) => {
  // One transform slot and a 300 ms upstream timeout: the last of eight 3840 px variants of an
  // 8 MP photo waits far longer than 300 ms for a slot, but far less than the 60 s job deadline.
  const sidecar = testSidecar({ frontend: upstream.url, concurrency: 1, upstreamTimeoutMs: 300, timeoutMs: 60_000 })
  t.after(() => sidecar.close())
  const server = await sidecar.listen(0, '127.0.0.1')
  t.after(() => {
    server.close()
    server.closeAllConnections()
  })
  const widths = [3840, 2048, 1920, 1200, 1080, 828, 750, 640]
  const answers = await Promise.all(widths.map(async (w) => {
    const res = await fetch(`${server.url}/_next/image?url=${encodeURIComponent('/corpus/large/elephants-3840x2160.jpg')}&w=${w}&q=75`, { headers: { accept: 'image/webp' } })
    return `${res.status} ${res.status === 200 ? '' : await res.text()}`.trim()
  }))
  assert.deepEqual(answers, widths.map(() => '200'))
  const text = await (await fetch(`${server.url}/metrics`)).text()
  assert.ok(metric(text, 'next_image_sidecar_source_deferrals_total') > 0, 'no job had to wait for a source slot: the test proves nothing')
})
