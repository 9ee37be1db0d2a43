/**
 * The shared cache beyond one Redis, with real servers started by the test: a Redis Cluster (three
 * masters, a replica each) and a master + replica watched by three Sentinels. On each: two sidecar
 * processes share entries and single flight, and a master killed under load costs no request.
 */
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { startCli } from '../helpers/cli.js'
import { metric } from '../helpers/metrics.js'
import { uniquePrefix } from '../helpers/redis.js'
import { LocalRedisCluster, LocalRedisSentinel } from '../helpers/redis-topologies.js'
import { image } from '../helpers/image-url.js'
import { waitUntil } from '../helpers/wait.js'
import type { ChildProcess } from 'node:child_process'

let upstream: UpstreamServer
before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  await upstream.close()
})

interface Topology {
  url: string
  stop(): Promise<void>
}

const metrics = async (url: string) => (await fetch(`${url}/metrics`)).text()
const getImage = async (origin: string, path: string) => {
  const res = await fetch(`${origin}${path}`, { headers: { accept: 'image/webp' }, signal: AbortSignal.timeout(30_000) })
  const body = Buffer.from(await res.arrayBuffer())
  return { status: res.status, cache: res.headers.get('x-nextjs-cache'), etag: res.headers.get('etag'), body }
}

function suite(name: string, start: () => Promise<Topology>, killMaster: (topology: Topology) => Promise<void>, untilRecovered: (topology: Topology) => Promise<void>) {
  describe(name, () => {
    let topology: Topology
    let replicas: Array<{ url: string; child: ChildProcess }>
    before(async () => {
      topology = await start()
      const args = ['--frontend', upstream.url, '--cache', topology.url, '--cache-prefix', uniquePrefix(name), '--max-attempts', '1']
      replicas = await Promise.all([startCli(args), startCli(args)])
    })
    after(async () => {
      for (const { child } of replicas ?? []) child.kill('SIGKILL')
      await topology?.stop()
    })

    test('the store answers: /readyz 200 and cache_store_up 1 on both replicas', async () => {
      for (const { url } of replicas) {
        assert.equal((await fetch(`${url}/readyz`)).status, 200)
        assert.equal(metric(await metrics(url), 'next_image_sidecar_cache_store_up'), 2, 'reads and writes up')
      }
    })

    test('an entry stored by one replica is a HIT on the other', async () => {
      const path = image('/corpus/png/chelsea.png', 96)
      const first = await getImage(replicas[0]!.url, path)
      assert.deepEqual([first.status, first.cache], [200, 'MISS'])
      const second = await getImage(replicas[1]!.url, path)
      assert.deepEqual([second.status, second.cache], [200, 'HIT'])
      assert.equal(second.etag, first.etag)
    })

    test('a herd of 64 identical cold requests over both replicas costs one transform', async () => {
      const before = await Promise.all(replicas.map(async ({ url }) => metric(await metrics(url), 'next_image_sidecar_transforms_total')))
      const path = image('/corpus/photo-jpeg/garden-progressive.jpg', 1920)
      const responses = await Promise.all(Array.from({ length: 64 }, (_, i) => getImage(replicas[i % 2]!.url, path)))
      assert.ok(responses.every((r) => r.status === 200))
      assert.equal(new Set(responses.map((r) => r.etag)).size, 1)
      const after = await Promise.all(replicas.map(async ({ url }) => metric(await metrics(url), 'next_image_sidecar_transforms_total')))
      assert.equal(after[0]! + after[1]! - before[0]! - before[1]!, 1)
    })

    test('a master killed under load: no request fails, and the replicas store and share entries again after the failover', { timeout: 120_000 }, async () => {
      const files = ['png/coffee.png', 'photo-jpeg/rocket.jpg', 'png-alpha/debian-logo-256.png', 'photo-jpeg/camera-gray.jpg']
      const variants = files.flatMap((f) => [64, 128, 256, 384].map((w) => image(`/corpus/${f}`, w)))
      const statuses: number[] = []
      let stop = false
      const load = Promise.all(
        replicas.flatMap(({ url }) =>
          [0, 1].map(async (worker) => {
            for (let i = worker; !stop; i++) statuses.push((await getImage(url, variants[i % variants.length]!)).status)
          }),
        ),
      )
      let atKill = 0
      try {
        await waitUntil(() => statuses.length >= 20, 'load before the failure')
        await killMaster(topology)
        atKill = statuses.length
        await untilRecovered(topology)
        await waitUntil(() => statuses.length >= atKill + 20, 'requests served through the failover')
        // Back: every replica's store answers again, and a new entry stored by one is a HIT on the other.
        // Variants neither replica has seen, so the second one's HIT can only come from the shared store.
        const unseen = ['fresh-flower', 'garden', 'storm', 'aqua', 'ladybird', 'green-meadow'].flatMap((f) =>
          [32, 48, 64, 96, 128, 256, 384, 640, 750, 828, 1080, 1200].map((w) => image(`/corpus/photo-jpeg/${f}.jpg`, w)),
        )
        await waitUntil(async () => {
          const up = await Promise.all(replicas.map(async ({ url }) => metric(await metrics(url), 'next_image_sidecar_cache_store_up', { op: 'write' })))
          const path = unseen.shift()
          if (!path) throw new Error('no unseen variant left')
          const first = await getImage(replicas[0]!.url, path)
          const second = await getImage(replicas[1]!.url, path)
          if (process.env.DEBUG_TOPO) process.stderr.write(`${JSON.stringify({ up, first: first.cache, second: second.cache })}\n`)
          return up.every((u) => u === 1) && second.cache === 'HIT'
        }, 'the store to serve both replicas again', 60_000, 250)
        stop = true
        await load
        assert.ok(statuses.length > atKill + 20)
        assert.deepEqual([...new Set(statuses)], [200], `statuses: ${JSON.stringify(statuses)}`)
      } finally {
        // A failure must not leave the load running (the file would never end).
        stop = true
        await load.catch(() => undefined)
      }
    })
  })
}

suite(
  'Redis Cluster (3 masters, 3 replicas)',
  () => LocalRedisCluster.start(),
  async (topology) => void (await (topology as LocalRedisCluster).killMaster()),
  (topology) => (topology as LocalRedisCluster).untilHealthy(),
)

suite(
  'Redis Sentinel (master, replica, 3 Sentinels)',
  () => LocalRedisSentinel.start(),
  (topology) => (topology as LocalRedisSentinel).master.kill(),
  async (topology) => {
    const { master, replica } = topology as LocalRedisSentinel
    await waitUntil(async () => (await (topology as LocalRedisSentinel).masterPort().catch(() => master.port)) === replica.port, 'Sentinel to promote the replica', 60_000, 200)
  },
)
