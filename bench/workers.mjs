#!/usr/bin/env node
// `node bench/workers.mjs` (after `npx tsc -p tsconfig.build.json`): how `--workers 2` scales cache HITs
// against one process, and why, on a machine whose every core is also the load generator's.
//
// All servers run on CPUs 0-1 with `wrk -t2 -c16` on the same two CPUs (this machine has no third core),
// the 4 KB WebP HIT of bench/hits.mjs (hot tier in front of SQLite, the default cache), rounds interleaved
// (every target once per round, in the same order), ratios the median of per-round ratios. Each wrk round also
// records the CPU time the server's process tree and wrk spent (from /proc), so the report can say what a
// request costs in each setup and what ratio two cores shared with wrk allow at all:
//   ceiling = (2 cores / (server CPU + wrk CPU per request with 2 workers)) / (one process's req/s).
// References in the same rounds: a bare node:http server answering the same bytes, alone and as a node:cluster
// of 2 (the platform's own scaling on this machine, with wrk sharing the cores), and two busy loops against one
// (the cores themselves: 2.0 when the two vCPUs are two real cores and nobody else runs).
// BENCH_BASELINE_CLI=<dir>/dist/sidecar/cli/main.js adds one process and --workers 2 of that build to the same
// rounds (before/after in one run). BENCH_SCHED=none also runs each --workers 2 with NODE_CLUSTER_SCHED_POLICY=none
// (the kernel hands connections to the workers instead of the primary's round robin).
// BENCH_ROUNDS (5), BENCH_SECONDS (6). Writes bench/results/workers.{json,md}. Loads only 127.0.0.1.
import { execFile, execFileSync } from 'node:child_process'
import cluster from 'node:cluster'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { freePort, servePublic, startServer } from './lib.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const APP = join(ROOT, 'example-next-app')
const CLI = process.env.BENCH_CLI ?? join(ROOT, 'dist/sidecar/cli/main.js')
const BASELINE_CLI = process.env.BENCH_BASELINE_CLI
const SCHED = (process.env.BENCH_SCHED ?? '').split(',').filter(Boolean)
// BENCH_CLOSE=1: every request on a new connection (Connection: close), instead of wrk's 16 kept-alive ones.
const CLOSE = process.env.BENCH_CLOSE === '1'
const PATH = '/_next/image?url=%2Fphotos%2Fdawn.jpg&w=640&q=75'
const ACCEPT = 'image/webp'
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 6)
const CONNECTIONS = 16
const CPUS = '0,1'
const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }))
const log = (...args) => console.error('[bench:workers]', ...args)

// `node bench/workers.mjs bare PORT FILE [WORKERS]`: node:http answering every request with the recorded response.
if (process.argv[2] === 'bare') {
  const workers = Number(process.argv[5] ?? 1)
  if (workers > 1 && cluster.isPrimary) {
    for (let i = 0; i < workers; i++) cluster.fork()
  } else {
    const { headers, body } = JSON.parse(readFileSync(process.argv[4], 'utf8'))
    const bytes = Buffer.from(body, 'base64')
    const flat = headers.flat()
    createServer((_req, res) => {
      res.writeHead(200, flat)
      res.end(bytes)
    }).listen(Number(process.argv[3]), '127.0.0.1')
  }
} else if (process.argv[2] === 'spin') {
  // A fixed amount of pure CPU work; prints its wall time in ms.
  const started = performance.now()
  let x = 0
  for (let i = 0; i < 4e8; i++) x = (x + i * 7) % 1000003
  console.log(performance.now() - started, x === -1 ? '' : '')
} else {
  await main()
}

/** utime + stime (µs) of a process and all its descendants, from /proc. */
function treeCpuUs(pid) {
  let ticks = 0
  const visit = (p) => {
    let stat
    try {
      stat = readFileSync(`/proc/${p}/stat`, 'utf8')
    } catch {
      return
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    ticks += Number(fields[11]) + Number(fields[12])
    for (const t of safeList(`/proc/${p}/task`)) for (const c of safeRead(`/proc/${p}/task/${t}/children`).trim().split(/\s+/).filter(Boolean)) visit(c)
  }
  visit(pid)
  return ticks * TICK_US
}
function safeRead(f) {
  try {
    return readFileSync(f, 'utf8')
  } catch {
    return ''
  }
}
function safeList(d) {
  try {
    return readdirSync(d)
  } catch {
    return []
  }
}

/** wrk -t2 -c16 on CPUs 0-1; also the CPU time wrk itself used (the shell's cutime/cstime once it waited for wrk). */
async function wrk(origin, seconds = SECONDS, close = false) {
  const script = join(tmpdir(), `nis-workers-${process.pid}.lua`)
  writeFileSync(
    script,
    `wrk.headers["Accept"] = ${JSON.stringify(ACCEPT)}
${close ? 'wrk.headers["Connection"] = "close"' : ''}
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\":%d,\\"seconds\\":%f,\\"p50\\":%f,\\"p99\\":%f,\\"non2xx\\":%d,\\"errors\\":%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end`,
  )
  const command = `taskset -c ${CPUS} wrk -t2 -c${CONNECTIONS} -d${seconds}s -s ${script} '${origin}${PATH}'; cat /proc/$$/stat`
  const { stdout } = await promisify(execFile)('sh', ['-c', command], { encoding: 'utf8' })
  const json = JSON.parse(stdout.split('\n').find((l) => l.startsWith('JSON ')).slice(5))
  if (json.non2xx + json.errors > 0) throw new Error(`${origin}: ${json.non2xx} non-2xx, ${json.errors} errors`)
  const stat = stdout.trim().split('\n').at(-1)
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { rps: json.requests / json.seconds, requests: json.requests, p50: json.p50, p99: json.p99, wrkCpuUs: (Number(fields[13]) + Number(fields[14])) * TICK_US }
}

async function fetchVariant(origin) {
  const res = await fetch(`${origin}${PATH}`, { headers: { accept: ACCEPT } })
  return { status: res.status, headers: [...res.headers], cache: res.headers.get('x-nextjs-cache'), body: Buffer.from(await res.arrayBuffer()) }
}

/** The wall time of `n` copies of the same busy loop on CPUs 0-1, at once. */
async function spin(n) {
  const runs = await Promise.all(Array.from({ length: n }, () => promisify(execFile)('taskset', ['-c', CPUS, process.execPath, fileURLToPath(import.meta.url), 'spin'], { encoding: 'utf8' })))
  return Math.max(...runs.map((r) => Number(r.stdout.trim().split(' ')[0])))
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

async function main() {
  const cleanup = []
  try {
    const photos = await servePublic(APP)
    cleanup.push(photos)
    const frontend = photos.url
    const tmp = mkdtempSync(join(tmpdir(), 'nis-workers-'))

    const builds = [['', CLI], ...(BASELINE_CLI ? [[' (baseline)', BASELINE_CLI]] : [])]
    const variants = []
    for (const [suffix, cli] of builds) {
      variants.push({ name: `one process${suffix}`, cli, extra: [], env: {} })
      variants.push({ name: `--workers 2${suffix}`, cli, extra: ['--workers', '2'], env: {} })
      for (const policy of SCHED) variants.push({ name: `--workers 2, NODE_CLUSTER_SCHED_POLICY=${policy}${suffix}`, cli, extra: ['--workers', '2'], env: { NODE_CLUSTER_SCHED_POLICY: policy } })
    }
    const targets = {}
    for (const v of variants) {
      const port = await freePort()
      const cache = `sqlite://${join(tmp, `${Object.keys(targets).length}.sqlite`)}`
      const s = await startServer({
        name: v.name,
        command: process.execPath,
        args: [v.cli, '--port', String(port), '--host', '127.0.0.1', '--frontend', frontend, '--config', join(APP, 'next.config.mjs'), '--cache', cache, ...v.extra],
        cwd: ROOT,
        env: { LOG_LEVEL: 'warn', ...v.env },
        cpus: CPUS,
        url: `http://127.0.0.1:${port}`,
        readyPath: '/readyz',
        stopTimeoutMs: 15000,
      })
      cleanup.push(s)
      targets[v.name] = s
    }
    // Every worker's hot tier gets the entry (connections are spread over the workers).
    let hit
    for (const [name, s] of Object.entries(targets)) {
      for (let i = 0; i < 8; i++) await fetchVariant(s.url)
      const r = await fetchVariant(s.url)
      if (r.status !== 200 || r.cache !== 'HIT') throw new Error(`${name}: expected a 200 HIT, got ${r.status} ${r.cache}`)
      hit ??= r
      if (!r.body.equals(hit.body)) throw new Error(`${name}: not the same bytes`)
    }
    const recorded = join(tmp, 'response.json')
    writeFileSync(recorded, JSON.stringify({ headers: hit.headers.filter(([name]) => !['date', 'connection', 'keep-alive'].includes(name)), body: hit.body.toString('base64') }))
    for (const [name, workers] of [
      ['bare node:http', 1],
      ['bare node:http, node:cluster of 2', 2],
    ]) {
      const port = await freePort()
      const s = await startServer({ name, command: process.execPath, args: [fileURLToPath(import.meta.url), 'bare', String(port), recorded, String(workers)], cwd: ROOT, env: {}, cpus: CPUS, url: `http://127.0.0.1:${port}` })
      cleanup.push(s)
      targets[name] = s
      if (!(await fetchVariant(s.url)).body.equals(hit.body)) throw new Error(`${name}: not the same bytes`)
    }

    for (const s of Object.values(targets)) await wrk(s.url, 2, CLOSE) // JIT and every connection's worker warm
    const runs = Object.fromEntries(Object.keys(targets).map((k) => [k, []]))
    const spins = { one: [], two: [] }
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, s] of Object.entries(targets)) {
        const before = treeCpuUs(s.pid)
        const r = await wrk(s.url, SECONDS, CLOSE)
        const serverCpuUs = treeCpuUs(s.pid) - before
        runs[name].push({ ...r, serverUsPerRequest: serverCpuUs / r.requests, wrkUsPerRequest: r.wrkCpuUs / r.requests })
        log(`round ${round + 1} ${name}: ${r.rps.toFixed(0)} req/s, server ${(serverCpuUs / r.requests).toFixed(1)} µs/req, wrk ${(r.wrkCpuUs / r.requests).toFixed(1)} µs/req, p99 ${r.p99.toFixed(2)} ms`)
      }
      spins.one.push(await spin(1))
      spins.two.push(await spin(2))
      log(`round ${round + 1} busy loops: one ${spins.one.at(-1).toFixed(0)} ms, two at once ${spins.two.at(-1).toFixed(0)} ms`)
    }

    const ratio = (a, b) => median(runs[a].map((r, i) => r.rps / runs[b][i].rps))
    const summary = Object.fromEntries(
      Object.entries(runs).map(([k, list]) => [
        k,
        {
          rps: median(list.map((r) => r.rps)),
          serverUsPerRequest: median(list.map((r) => r.serverUsPerRequest)),
          wrkUsPerRequest: median(list.map((r) => r.wrkUsPerRequest)),
          // Cores busy: the server's tree and wrk, per second of the round.
          coresBusy: median(list.map((r) => (r.rps * (r.serverUsPerRequest + r.wrkUsPerRequest)) / 1e6)),
          p99: median(list.map((r) => r.p99)),
          rounds: list.map((r) => Math.round(r.rps)),
        },
      ]),
    )
    const scaling = {}
    for (const [suffix] of builds) {
      const one = `one process${suffix}`
      for (const name of Object.keys(runs).filter((k) => k.startsWith('--workers 2') && k.endsWith(suffix) && (suffix || !k.endsWith(' (baseline)')))) {
        const two = summary[name]
        scaling[name] = {
          vsOne: ratio(name, one),
          // What two cores shared with wrk allow: all of both cores at this cost per request (server + wrk).
          ceiling: median(runs[name].map((r, i) => 2e6 / (r.serverUsPerRequest + r.wrkUsPerRequest) / runs[one][i].rps)),
          // With wrk's CPU elsewhere: two cores' worth of this setup's cost per request against one process's.
          withoutWrk: median(runs[name].map((r, i) => (2e6 / r.serverUsPerRequest) / (1e6 / runs[one][i].serverUsPerRequest))),
          coresBusy: two.coresBusy,
        }
      }
    }
    scaling['bare node:http, node:cluster of 2'] = {
      vsOne: ratio('bare node:http, node:cluster of 2', 'bare node:http'),
      ceiling: median(runs['bare node:http, node:cluster of 2'].map((r, i) => 2e6 / (r.serverUsPerRequest + r.wrkUsPerRequest) / runs['bare node:http'][i].rps)),
      withoutWrk: median(runs['bare node:http, node:cluster of 2'].map((r, i) => (2e6 / r.serverUsPerRequest) / (1e6 / runs['bare node:http'][i].serverUsPerRequest))),
      coresBusy: summary['bare node:http, node:cluster of 2'].coresBusy,
    }
    if (BASELINE_CLI) {
      for (const name of Object.keys(runs).filter((k) => !k.endsWith(' (baseline)') && runs[`${k} (baseline)`])) (scaling[name] ??= {}).vsBaseline = ratio(name, `${name} (baseline)`)
    }
    const machine = median(spins.one.map((one, i) => (2 * one) / spins.two[i]))
    const results = { close: CLOSE, date: new Date().toISOString(), node: process.version, path: PATH, bytes: hit.body.byteLength, rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, summary, scaling, machineScaling: machine, spins, runs }
    const f = (x, d = 2) => x.toFixed(d)
    const lines = [
      `# \`--workers 2\` against one process: cache HITs on 2 cores shared with wrk`,
      '',
      `${results.date}, Node ${results.node}; \`${PATH}\` (Accept ${ACCEPT}, ${results.bytes} bytes, a HIT from the hot tier over SQLite); every server on CPUs ${CPUS}, \`wrk -t2 -c${CONNECTIONS} -d${SECONDS}s\`${CLOSE ? ' with `Connection: close` (a new connection per request)' : ''} on the same CPUs; ${ROUNDS} interleaved rounds; medians; ratios the median of per-round ratios. CPU per request from /proc (server: the process and its workers; wrk: its own).`,
      '',
      '| server | req/s | server CPU µs/req | wrk CPU µs/req | cores busy | p99 ms | req/s per round |',
      '|---|---|---|---|---|---|---|',
      ...Object.entries(summary).map(([k, s]) => `| ${k} | ${f(s.rps, 0)} | ${f(s.serverUsPerRequest, 1)} | ${f(s.wrkUsPerRequest, 1)} | ${f(s.coresBusy)} | ${f(s.p99)} | ${s.rounds.join(', ')} |`),
      '',
      '| scaling | vs one process | ceiling with wrk on the same 2 cores | 2 cores without wrk (from CPU per request) |' + (BASELINE_CLI ? ' vs the baseline build |' : ''),
      '|---|---|---|---|' + (BASELINE_CLI ? '---|' : ''),
      ...Object.entries(scaling).map(([k, s]) => (s.vsOne === undefined ? `| ${k} | | | |` : `| ${k} | **${f(s.vsOne)}×** | ${f(s.ceiling)}× | ${f(s.withoutWrk)}× |`) + (BASELINE_CLI ? ` ${s.vsBaseline ? f(s.vsBaseline) + '×' : ''} |` : '')),
      '',
      `The two vCPUs themselves: two busy loops at once against one, ${f(machine)}× (per round: ${spins.one.map((one, i) => f((2 * one) / spins.two[i])).join(', ')}).`,
    ]
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
    const out = join(ROOT, `bench/results/workers${CLOSE ? '-close' : ''}`)
    writeFileSync(`${out}.json`, JSON.stringify(results, null, 2))
    writeFileSync(`${out}.md`, `${lines.join('\n')}\n`)
    console.log(lines.join('\n'))
  } finally {
    for (const s of cleanup.reverse()) await s.stop().catch(() => {})
  }
  process.exit(0)
}
