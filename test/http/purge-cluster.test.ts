/**
 * Purge across processes with the real CLI: two replicas on one Redis, each with --workers 2 (four
 * hot tiers), and a --workers 2 sidecar on SQLite purged straight on its file. After the purge no
 * request on any worker of any replica gets an old byte; other sources stay cached.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startUpstream, corpusFile, type UpstreamServer } from '../helpers/upstream-server.js'
import { runCliToExit, startCli, stopChild } from '../helpers/cli.js'
import { PrivateRedis, uniquePrefix } from '../helpers/redis.js'
import { freePort } from '../helpers/next-app.js'
import { image } from '../helpers/image-url.js'
import { fresh, variants } from '../helpers/fresh-request.js'
import { waitUntil } from '../helpers/wait.js'

let upstream: UpstreamServer
let redis: PrivateRedis
const OLD = corpusFile('photo-jpeg/rocket.jpg')
const NEW = corpusFile('photo-jpeg/garden.jpg')
const jpeg = (body: Buffer) => ({ status: 200, body, headers: { 'content-type': 'image/jpeg' } })
const TOKEN = 'test-admin-token-0123456789abcdef'

before(async () => {
  upstream = await startUpstream()
  redis = await PrivateRedis.start()
})
after(async () => {
  await upstream.close()
  await redis.kill()
})


/** Every variant, `times` times on each replica: the bodies per variant as served. */
async function sweep(replicas: string[], src: string, times = 6) {
  const seen = new Map<string, Array<{ cache: string; body: Buffer }>>()
  for (const { path, accept } of variants(src)) {
    const id = `${accept} ${path}`
    for (const url of replicas) {
      for (let i = 0; i < times; i++) {
        const res = await fresh(`${url}${path}`, accept)
        assert.equal(res.status, 200, `${url}${path}`)
        seen.set(id, [...(seen.get(id) ?? []), res])
      }
    }
  }
  return seen
}


test('two replicas on Redis, two workers each: a purge through one replica reaches every hot tier, the other source stays a HIT', async () => {
  const prefix = uniquePrefix('purge-cluster')
  const metricsPorts = [await freePort(), await freePort()]
  const replicas = await Promise.all(
    metricsPorts.map((mp) =>
      startCli(['--frontend', upstream.url, '--cache', redis.url, '--cache-prefix', prefix, '--workers', '2', '--max-attempts', '1', '--metrics-port', String(mp)], { IMAGE_SIDECAR_ADMIN_TOKEN: TOKEN }),
    ),
  )
  try {
    const urls = replicas.map((r) => r.url)
    // Every worker listening (each answers /readyz through the shared port; poll with fresh connections).
    upstream.mutable.set('chero', jpeg(OLD))
    upstream.mutable.set('cother', jpeg(OLD))
    const before = await sweep(urls, '/mutable/chero')
    await sweep(urls, '/mutable/cother')
    for (const [id, served] of before) assert.ok(served.slice(1).every((r) => r.body.equals(served[0]!.body)), `${id}: one image`)

    upstream.mutable.set('chero', jpeg(NEW))
    const purged = await runCliToExit(['purge', '/mutable/chero', '--target', `http://127.0.0.1:${metricsPorts[0]}`], { IMAGE_SIDECAR_ADMIN_TOKEN: TOKEN })
    assert.equal(purged.code, 0, purged.stderr)
    assert.match(purged.stderr, /removed 4 cached variants \(2 optimizer URLs\)/)
    assert.deepEqual(purged.stdout.trim().split('\n').sort(), [image('/mutable/chero', 1080), image('/mutable/chero', 640)])

    const after = await sweep(urls, '/mutable/chero')
    for (const [id, served] of after) {
      const old = before.get(id)![0]!.body
      for (const res of served) assert.ok(!res.body.equals(old), `${id}: the old bytes were served after the purge (${res.cache})`)
    }
    const other = await sweep(urls, '/mutable/cother', 2)
    for (const [id, served] of other) assert.ok(served.every((r) => r.cache === 'HIT'), `${id}: another source was purged`)
  } finally {
    await Promise.all(replicas.map(({ child }) => stopChild(child)))
  }
})

test('straight on Redis (--cache): the running replicas drop their hot copies before the command returns', async () => {
  const prefix = uniquePrefix('purge-direct')
  const replicas = await Promise.all([0, 1].map(() => startCli(['--frontend', upstream.url, '--cache', redis.url, '--cache-prefix', prefix, '--max-attempts', '1'])))
  try {
    const urls = replicas.map((r) => r.url)
    upstream.mutable.set('dhero', jpeg(OLD))
    const before = await sweep(urls, '/mutable/dhero', 2)
    upstream.mutable.set('dhero', jpeg(NEW))
    const purged = await runCliToExit(['purge', '/mutable/dhero', '--cache', redis.url, '--cache-prefix', prefix])
    assert.equal(purged.code, 0, purged.stderr)
    assert.match(purged.stderr, /removed 4 cached variants \(2 optimizer URLs\); 2 other processes dropped/)
    const after = await sweep(urls, '/mutable/dhero', 2)
    for (const [id, served] of after) for (const res of served) assert.ok(!res.body.equals(before.get(id)![0]!.body), `${id}: old bytes after the purge (${res.cache})`)
  } finally {
    await Promise.all(replicas.map(({ child }) => stopChild(child)))
  }
})

test('SQLite with two workers: the CLI straight on the file reaches both workers\' hot tiers', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'nis-purge-cluster-')), 'cache.sqlite')
  const sidecar = await startCli(['--frontend', upstream.url, '--cache', `sqlite://${file}`, '--workers', '2', '--max-attempts', '1'], { IMAGE_SIDECAR_ADMIN_TOKEN: TOKEN })
  try {
    upstream.mutable.set('shero', jpeg(OLD))
    const before = await sweep([sidecar.url], '/mutable/shero')
    upstream.mutable.set('shero', jpeg(NEW))
    const purged = await runCliToExit(['purge', '/mutable/shero', '--cache', `sqlite://${file}`])
    assert.equal(purged.code, 0, purged.stderr)
    assert.match(purged.stderr, /removed 4 cached variants/)
    const after = await sweep([sidecar.url], '/mutable/shero')
    for (const [id, served] of after) for (const res of served) assert.ok(!res.body.equals(before.get(id)![0]!.body), `${id}: old bytes after the purge (${res.cache})`)
    // Through the sidecar: the worker that takes the request tells the other through the primary, at once.
    upstream.mutable.set('shero', jpeg(corpusFile('photo-jpeg/aqua.jpg')))
    const viaHttp = await fetch(`${sidecar.url}/purge`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: JSON.stringify({ sources: ['/mutable/shero'] }) })
    assert.equal(viaHttp.status, 200)
    assert.deepEqual({ ...((await viaHttp.json()) as object), urls: undefined }, { removed: 4, processes: 1, missed: 0, urls: undefined })
    const third = await sweep([sidecar.url], '/mutable/shero')
    for (const [id, served] of third) for (const res of served) assert.ok(!res.body.equals(after.get(id)![0]!.body), `${id}: old bytes after the HTTP purge (${res.cache})`)
  } finally {
    await stopChild(sidecar.child)
  }
})

test('the CLI exits 1 when nothing can be reached, and says what a sidecar without a token answers', async () => {
  const port = await freePort()
  const unreachable = await runCliToExit(['purge', '/a.jpg', '--target', `http://127.0.0.1:${port}`], { IMAGE_SIDECAR_ADMIN_TOKEN: TOKEN })
  assert.equal(unreachable.code, 1)
  assert.match(unreachable.stderr, /could not reach/)
  const down = await runCliToExit(['purge', '--all', '--cache', `redis://127.0.0.1:${port}`])
  assert.equal(down.code, 1)
  assert.match(down.stderr, /could not reach the cache store/)
  const open = await startCli(['--frontend', upstream.url, '--cache', 'memory://'])
  try {
    const noRoute = await runCliToExit(['purge', '/a.jpg', '--target', open.url], { IMAGE_SIDECAR_ADMIN_TOKEN: TOKEN })
    assert.equal(noRoute.code, 1)
    assert.match(noRoute.stderr, /404.*admin token/)
  } finally {
    open.child.kill('SIGTERM')
  }
  await waitUntil(() => open.child.exitCode !== null, 'the sidecar to stop')
})
