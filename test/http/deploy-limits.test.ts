/**
 * The table of derived limits (docs/performance.md, Memory), checked against the real CLI in a cgroup of each column's size:
 * the 256 MiB / 1-CPU pod, and the shipped Kubernetes manifest with its own limits and environment.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { parse, parseAllDocuments } from 'yaml'
import { PodCgroup, cgroupsAvailable } from '../helpers/cgroup.js'
import { CLI, stopChild } from '../helpers/cli.js'
import { freePort, REPO } from '../helpers/next-app.js'
import { waitUntil } from '../helpers/wait.js'
import { parseBytes, RUNTIME_RESERVE } from '../../sidecar/runtime/limits.js'

const MiB = 1024 ** 2
const skip = cgroupsAvailable() ? false : 'needs root and writable cgroup v1 memory and cpu controllers'

/** docs/performance.md, Memory: the derived-limits table, as { column header → { row → cell } }. */
function readmeTable(): Map<string, Map<string, string>> {
  const lines = readFileSync(join(REPO, 'docs/performance.md'), 'utf8').split('\n')
  const start = lines.findIndex((l) => l.startsWith('| derived | from |'))
  assert.ok(start >= 0, 'the derived-limits table in docs/performance.md')
  const cells = (line: string) => line.split('|').slice(1, -1).map((c) => c.trim())
  const headers = cells(lines[start]!)
  const columns = new Map(headers.slice(2).map((h) => [h, new Map<string, string>()]))
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break
    const row = cells(line)
    headers.slice(2).forEach((h, i) => columns.get(h)!.set(row[0]!, row[i + 2]!))
  }
  return columns
}

/** "176 MiB" → 176, "1 (not 32)" → 1. */
const leadingNumber = (cell: string) => Number(/^\d+(\.\d+)?/.exec(cell)?.[0])

/** Starts the CLI inside a cgroup of `memoryBytes` and `cpus`; resolves with its log lines up to `limits`. */
async function derivedIn(memoryBytes: number, cpus: number, { NEXT_CONFIG_CONTENT, ...env }: Record<string, string>): Promise<Array<Record<string, unknown>>> {
  const dir = mkdtempSync(join(tmpdir(), 'nis-deploy-limits-'))
  const group = PodCgroup.create(memoryBytes, cpus)
  try {
    const config = join(dir, 'next.config.mjs')
    writeFileSync(config, NEXT_CONFIG_CONTENT ?? 'export default {}')
    const port = await freePort()
    const child = group.spawn(process.execPath, [CLI, '--host', '127.0.0.1', '--port', String(port)], {
      env: {
        PATH: process.env.PATH,
        LOG_LEVEL: 'info',
        ...env,
        NEXT_CONFIG_PATH: config,
        FRONTEND_INTERNAL_URL: 'http://127.0.0.1:1',
        IMAGE_CACHE_URL: `sqlite://${join(dir, 'cache.sqlite')}`,
        METRICS_PORT: String(await freePort()),
        SHUTDOWN_DELAY_MS: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    // A CLI that dies before the wait ends (an OOM kill is a signal, not an exit code) fails the test with its cause.
    let stderr = ''
    child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)))
    const lines: Array<Record<string, unknown>> = []
    createInterface({ input: child.stdout! }).on('line', (text) => lines.push(JSON.parse(text) as Record<string, unknown>))
    const died = () => `the CLI ended (exit code ${child.exitCode}, signal ${child.signalCode}, OOM kills in its cgroup: ${group.oomKills}); its stderr: ${stderr}`
    try {
      await waitUntil(() => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(died())
        // Every process that serves: a cluster's primary names its workers before any of them listens.
        const cluster = lines.find((l) => l.msg === 'next-image-sidecar cluster starting')
        return lines.filter((l) => l.msg === 'next-image-sidecar listening').length >= (cluster ? Number(cluster.workers) : 1)
      }, 'every process of the CLI to listen', 30_000, 50)
    } finally {
      // SIGTERM drains (SHUTDOWN_DELAY_MS=0, nothing in flight); a CLI that does not exit is killed, and fails the test.
      await stopChild(child)
    }
    return lines
  } finally {
    await group.remove()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Every worker's `limits` line matches the column (per worker), and together they fit the container. */
function assertColumn(column: Map<string, string>, lines: Array<Record<string, unknown>>, memoryBytes: number): void {
  const limits = lines.filter((l) => l.msg === 'limits')
  const workers = leadingNumber(column.get('`--workers auto`')!)
  assert.equal(limits.length, workers, 'processes serving')
  assert.equal(lines.some((l) => l.msg === 'next-image-sidecar cluster starting'), workers > 1, 'a cluster primary')
  // The table gives whole MiB (140.8 MiB reads 140 MiB): within one.
  const expect = (derived: Record<string, unknown>, row: string, actual: unknown, unit = 1) => {
    const table = leadingNumber(column.get(row)!)
    assert.ok(Math.abs(Number(actual) / unit - table) < 1, `${row}: README says ${table}, worker ${String(derived.worker ?? 0)} derived ${Number(actual) / unit}`)
  }
  for (const derived of limits) {
    expect(derived, '`--concurrency`', derived.concurrency)
    expect(derived, 'libvips threads per transform', derived.libvipsThreads)
    expect(derived, 'memory limit planned for', derived.memoryLimit, MiB)
    expect(derived, 'hot cache tier', derived.hotCache, MiB)
    expect(derived, 'largest single image job', derived.maxImageMemory, MiB)
    expect(derived, 'memory budget of concurrent jobs', derived.memoryBudget, MiB)
  }
  // Each worker is a whole Node process with its own hot tier: planned together, they fit the limit.
  const planned = limits.reduce((sum, l) => sum + RUNTIME_RESERVE + Number(l.hotCache) + Number(l.maxImageMemory), 0)
  assert.ok(planned <= memoryBytes, `the workers plan ${planned / MiB} MiB in a ${memoryBytes / MiB} MiB container`)
}

test('a 256 MiB, 1-CPU pod derives what README’s table says', { skip }, async () => {
  const column = readmeTable().get('a 256 MiB, 1-CPU pod on a 32-core node')!
  assert.ok(column)
  assertColumn(column, await derivedIn(256 * MiB, 1, { WORKERS: 'auto' }), 256 * MiB)
})

test('the shipped Kubernetes manifest, run in a cgroup of its limits with its environment, derives the table’s column', { skip }, async () => {
  const docs = parseAllDocuments(readFileSync(join(REPO, 'deploy/kubernetes/next-image-sidecar.yaml'), 'utf8')).map((d) => d.toJS())
  const container = docs.find((d) => d.kind === 'Deployment').spec.template.spec.containers[0]
  const env: Record<string, string> = Object.fromEntries(container.env.map((e: { name: string; value: string }) => [e.name, e.value]))
  env.NEXT_CONFIG_CONTENT = docs.find((d) => d.kind === 'ConfigMap').data['next.config.mjs']
  const memory = parseBytes(container.resources.limits.memory)!
  const cpus = Number(container.resources.limits.cpu)
  const header = [...readmeTable().keys()].find((h) => h.startsWith('the shipped Kubernetes manifest'))
  assert.ok(header, 'a column for the manifest')
  // The column names the manifest's size: the two cannot drift apart.
  assert.match(header, new RegExp(`${memory / MiB} MiB, ${cpus} CPU, \`WORKERS=${env.WORKERS}\``))
  assertColumn(readmeTable().get(header)!, await derivedIn(memory, cpus, env), memory)
})

test('docker-compose’s sidecar, in a cgroup of its limits with its environment (a --workers cluster), derives the table’s column per worker', { skip }, async () => {
  const sidecar = parse(readFileSync(join(REPO, 'deploy/docker-compose.yml'), 'utf8')).services.sidecar
  const env: Record<string, string> = Object.fromEntries(Object.entries(sidecar.environment as Record<string, unknown>).map(([k, v]) => [k, String(v)]))
  const memory = Number(sidecar.mem_limit)
  const cpus = Number(sidecar.cpus)
  assert.ok(memory > 0 && cpus > 0, 'docker-compose limits the sidecar’s memory and CPUs')
  env.NEXT_CONFIG_CONTENT = readFileSync(join(REPO, 'deploy/next.config.example.mjs'), 'utf8')
  const header = [...readmeTable().keys()].find((h) => h.startsWith('docker-compose'))
  assert.ok(header, 'a column for docker-compose')
  assert.match(header, new RegExp(`${memory / 1024 ** 3} GiB, ${cpus} CPUs, \`WORKERS=${env.WORKERS}\``))
  assertColumn(readmeTable().get(header)!, await derivedIn(memory, cpus, env), memory)
})
