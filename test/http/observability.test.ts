/**
 * The operations kit against the real thing: Debian's promtool checks and unit-tests the shipped rules
 * (every alert fires on its bad series and stays quiet on a healthy one), and a real Prometheus, running
 * the shipped scrape config and rules, scrapes a sidecar CLI under a short load on its metrics port;
 * every expression of every rule and of every dashboard panel must parse and return data there (a
 * renamed metric or a typo returns nothing).
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse, stringify } from 'yaml'
import { startCli } from '../helpers/cli.js'
import { freePort, REPO } from '../helpers/next-app.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { waitUntil } from '../helpers/wait.js'

const KIT = join(REPO, 'deploy/observability')
type Rule = { record?: string; alert?: string; expr: string }
const rules = (parse(readFileSync(join(KIT, 'prometheus-rules.yaml'), 'utf8')) as { groups: Array<{ name: string; interval?: string; rules: Rule[] }> }).groups
const dashboard = JSON.parse(readFileSync(join(KIT, 'grafana-dashboard.json'), 'utf8')) as { panels: Array<{ title: string; targets: Array<{ expr: string }> }> }

describe('promtool', () => {
  test('check rules accepts the shipped rules', () => {
    execFileSync('promtool', ['check', 'rules', join(KIT, 'prometheus-rules.yaml')], { stdio: 'pipe' })
  })
  test('every alert fires on its bad series and stays quiet on a healthy one (test rules)', () => {
    const out = execFileSync('promtool', ['test', 'rules', join(KIT, 'prometheus-rules.test.yaml')], { encoding: 'utf8', stdio: 'pipe' })
    assert.match(out, /SUCCESS/)
    // The unit tests cover every alert of the file.
    const tested = new Set([...readFileSync(join(KIT, 'prometheus-rules.test.yaml'), 'utf8').matchAll(/alertname: (\w+)/g)].map((m) => m[1]))
    for (const rule of rules.flatMap((g) => g.rules)) if (rule.alert) assert.ok(tested.has(rule.alert), `${rule.alert} has no promtool test`)
  })
})

/** An alert's signal: each `and` operand without its threshold (the full expression is checked to parse). */
function signals(expr: string): string[] {
  return expr.split(/\s+and\s+/).map((part) => part.split(/\s(?:>|<|==|>=|<=|!=)\s/)[0]!.trim())
}

/** Grafana's variables as a query with every job and instance selected would have them. */
const grafana = (expr: string) => expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.+').replaceAll('$instance', '.+')

/** The pids of a process's children (a --workers primary's workers), from the kernel. */
function childrenOf(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
}

// Once as one process, once as a --workers 2 cluster (docker-compose's mode), whose /metrics the primary aggregates.
for (const workers of [1, 2]) describe(`a real Prometheus scraping a loaded sidecar${workers > 1 ? ` with --workers ${workers}` : ''} with the shipped config, rules and dashboard`, () => {
  let upstream: UpstreamServer
  let sidecar: { url: string; child: ChildProcess }
  let metricsUrl: string
  let prometheus: ChildProcess
  let api: string
  const dir = mkdtempSync(join(tmpdir(), 'nis-prometheus-'))

  async function query(expr: string): Promise<{ status: string; error?: string; data?: { result: unknown[] } }> {
    const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`)
    return (await res.json()) as { status: string; error?: string; data?: { result: unknown[] } }
  }

  before(async () => {
    upstream = await startUpstream()
    const config = join(dir, 'next.config.mjs')
    writeFileSync(config, `export default { images: { remotePatterns: [{ protocol: 'http', hostname: '127.0.0.1' }] } }`)
    const metricsPort = await freePort()
    // memory:// is private to each process, so the cluster shares a SQLite file.
    const cache = workers > 1 ? ['--workers', String(workers), '--cache', `sqlite://${join(dir, 'cache.sqlite')}`] : ['--cache', 'memory://']
    sidecar = await startCli(['--frontend', upstream.url, '--config', config, ...cache, '--metrics-port', String(metricsPort), '--dangerously-allow-local-ip', '--max-attempts', '1'])
    if (workers > 1) await waitUntil(() => childrenOf(sidecar.child.pid!).length === workers, `${workers} workers`, 30_000)
    metricsUrl = `http://127.0.0.1:${metricsPort}`

    // The shipped scrape config, pointed at this sidecar: faster intervals, and without the Kubernetes
    // job (Debian's Prometheus is built without Kubernetes discovery).
    const shipped = parse(readFileSync(join(KIT, 'prometheus.yml'), 'utf8')) as { global: Record<string, string>; rule_files: string[]; scrape_configs: Array<Record<string, unknown>> }
    shipped.global = { ...shipped.global, scrape_interval: '1s', evaluation_interval: '1s' }
    shipped.scrape_configs = shipped.scrape_configs.filter((job) => !('kubernetes_sd_configs' in job))
    shipped.scrape_configs[0]!.static_configs = [{ targets: [`127.0.0.1:${metricsPort}`] }]
    // The shipped rules, evaluated every second instead of every 30 s.
    writeFileSync(join(dir, 'prometheus-rules.yaml'), stringify({ groups: rules.map((g) => ({ ...g, interval: '1s' })) }))
    writeFileSync(join(dir, 'prometheus.yml'), stringify(shipped))
    const port = await freePort()
    api = `http://127.0.0.1:${port}`
    prometheus = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' })
    await waitUntil(async () => (await fetch(`${api}/-/ready`).catch(() => undefined))?.ok === true, 'Prometheus to be ready', 30_000, 100)

    // A short load: misses and hits of internal and external images, an upstream error, a 400.
    const image = (url: string, w = 640) => `${sidecar.url}/_next/image?url=${encodeURIComponent(url)}&w=${w}&q=75`
    const urls = [
      image('/corpus/png/chelsea.png'), image('/corpus/photo-jpeg/rocket.jpg'), image('/corpus/png/chelsea.png', 1080),
      image(`${upstream.url}/corpus/png/coins-gray.png`), image(`${upstream.url}/status/404`), image('/corpus/png/chelsea.png', 17),
    ]
    for (let round = 0; round < 3; round++) {
      await Promise.all(urls.map((url) => fetch(url, { headers: { accept: 'image/webp' } }).then((r) => r.arrayBuffer())))
    }
    // Every recording rule has been evaluated on at least two scrapes.
    await waitUntil(async () => {
      for (const rule of rules.flatMap((g) => g.rules)) {
        if (rule.record && !(await query(rule.record)).data?.result.length) return false
      }
      return true
    }, 'every recorded series', 60_000, 250)
  })

  after(async () => {
    prometheus?.kill('SIGKILL')
    // SIGTERM: a cluster's primary takes its workers down with it.
    sidecar?.child.kill('SIGTERM')
    await upstream?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  test('/metrics is served on the metrics port and not on the image port', async () => {
    assert.equal((await fetch(`${sidecar.url}/metrics`)).status, 404)
    const res = await fetch(`${metricsUrl}/metrics`)
    assert.equal(res.status, 200)
    assert.match(await res.text(), /next_image_sidecar_queue_capacity \d+/)
    assert.equal((await fetch(`${metricsUrl}/readyz`)).status, 200)
  })

  test('Prometheus scrapes the sidecar through the shipped config', async () => {
    const up = await query('up{job="next-image-sidecar"}')
    assert.deepEqual((up.data!.result as Array<{ value: [number, string] }>).map((r) => r.value[1]), ['1'])
  })

  for (const group of rules) {
    for (const rule of group.rules) {
      const name = rule.record ?? rule.alert!
      test(`rule ${name}: parses and returns data`, async () => {
        const full = await query(rule.expr)
        assert.equal(full.status, 'success', full.error)
        for (const signal of rule.alert ? signals(rule.expr) : [rule.expr]) {
          const result = await query(signal)
          assert.equal(result.status, 'success', `${signal}: ${result.error}`)
          assert.ok(result.data!.result.length > 0, `no data for ${signal}`)
        }
      })
    }
  }

  if (workers > 1) {
    test('NextImageSidecarRestarting fires when workers keep being replaced', async () => {
      const restarts = async () => Number((((await query('sum(changes(next_image_sidecar_process_start_time_seconds[1h]))')).data?.result[0] as { value: [number, string] } | undefined)?.value[1]) ?? 0)
      for (let i = 1; i <= 3; i++) {
        const [victim] = childrenOf(sidecar.child.pid!)
        process.kill(victim!, 'SIGKILL')
        // Each replacement seen by Prometheus before the next (the primary waits 1 s before forking).
        await waitUntil(async () => (await restarts()) >= i, `restart ${i} in Prometheus`, 30_000, 250)
      }
      await waitUntil(async () => ((await query('ALERTS{alertname="NextImageSidecarRestarting",alertstate="firing"}')).data?.result.length ?? 0) > 0, 'the alert to fire', 30_000, 250)
    })
  }

  for (const panel of dashboard.panels) {
    test(`dashboard panel "${panel.title}": every query parses and returns data`, async () => {
      for (const target of panel.targets) {
        const result = await query(grafana(target.expr))
        assert.equal(result.status, 'success', `${target.expr}: ${result.error}`)
        assert.ok(result.data!.result.length > 0, `no data for ${target.expr}`)
      }
    })
  }
})
