// npm run bench:hits — what a cache HIT costs, against the platform's ceiling and against `next start`.
// Three servers, each pinned to CPU 0 (taskset), wrk pinned to CPU 1, the same image variant
// (/_next/image?url=/photos/dawn.jpg&w=640&q=75, Accept image/webp), interleaved rounds:
//   - bare: a node:http server writing the sidecar's response (same status, headers, bytes) from memory
//   - sidecar: the package's command on a HIT (--cache memory://, default logging)
//   - next: `next start` of example-next-app on a HIT
// Then `--workers 2` against one worker (both on CPUs 0-1, wrk sharing them: this machine has no third
// core), and RSS of the sidecar sampled once a second over a hit storm (BENCH_STORM_SECONDS, default 60).
// BENCH_PROFILE=1 also runs the sidecar under `node --cpu-prof` for one wrk round and prints where the
// time goes (self time by module); BENCH_NEXT=0 skips `next build` / `next start`.
import { execFile, execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { startServer } from './lib.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const APP = join(ROOT, 'example-next-app')
// BENCH_CLI: another build's CLI (a copy of dist/ from before a change) in place of this one.
const CLI = process.env.BENCH_CLI ?? join(ROOT, 'dist/sidecar/cli/main.js')
const NEXT_BIN = join(ROOT, 'node_modules/next/dist/bin/next')
const PATH = '/_next/image?url=%2Fphotos%2Fdawn.jpg&w=640&q=75'
const ACCEPT = 'image/webp'
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8)
const STORM_SECONDS = Number(process.env.BENCH_STORM_SECONDS ?? 60)
const CONNECTIONS = 16
const WITH_NEXT = process.env.BENCH_NEXT !== '0'
const PROFILE = process.env.BENCH_PROFILE === '1'
const NEXT_ENV = { NEXT_TELEMETRY_DISABLED: '1', EXAMPLE_DIST_DIR: '.next-hits', NODE_ENV: 'production' }
const log = (...args) => console.error('[bench:hits]', ...args)

// `node bench/hits.mjs bare PORT FILE`: the ceiling, a node:http server answering every request with
// the recorded response (headers in the sidecar's order; Node adds Date, Connection and Keep-Alive as it does there).
if (process.argv[2] === 'bare') {
  const { headers, body } = JSON.parse(readFileSync(process.argv[4], 'utf8'))
  const bytes = Buffer.from(body, 'base64')
  const flat = headers.flat()
  createServer((_req, res) => {
    res.writeHead(200, flat)
    res.end(bytes)
  }).listen(Number(process.argv[3]), '127.0.0.1')
} else {
  await main()
}

async function freePort() {
  const server = createNetServer().listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  const { port } = server.address()
  await new Promise((r) => server.close(r))
  return port
}

/** Spawns a server pinned to `cpus`, waits until `readyPath` answers. */
/** A Node process of the bench on `cpus`, up once `readyPath` answers (lib.mjs startServer; a draining sidecar may take 15 s to stop). */
function start({ name, args, cwd = ROOT, env = {}, cpus, port, readyPath = '/', nodeFlags = [] }) {
  return startServer({ name, command: process.execPath, args: [...nodeFlags, ...args], cwd, env, cpus, url: `http://127.0.0.1:${port}`, readyPath, stopTimeoutMs: 15000 })
}

/** The response to the bench's request, as the client sees it. */
async function fetchVariant(origin) {
  const res = await fetch(`${origin}${PATH}`, { headers: { accept: ACCEPT } })
  return { status: res.status, headers: [...res.headers], cache: res.headers.get('x-nextjs-cache'), body: Buffer.from(await res.arrayBuffer()) }
}

async function wrk(origin, seconds = SECONDS, cpus = '1', threads = 1) {
  const script = `wrk.headers["Accept"] = ${JSON.stringify(ACCEPT)}
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\":%d,\\"seconds\\":%f,\\"p50\\":%f,\\"p99\\":%f,\\"non2xx\\":%d,\\"errors\\":%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end`
  const file = join(tmpdir(), `nis-hits-${process.pid}.lua`)
  writeFileSync(file, script)
  const { stdout } = await promisify(execFile)('taskset', ['-c', cpus, 'wrk', `-t${threads}`, `-c${CONNECTIONS}`, `-d${seconds}s`, '-s', file, `${origin}${PATH}`], { encoding: 'utf8' })
  const json = JSON.parse(stdout.split('\n').find((l) => l.startsWith('JSON ')).slice(5))
  if (json.non2xx + json.errors > 0) throw new Error(`${origin}: ${json.non2xx} non-2xx, ${json.errors} errors`)
  return { rps: json.requests / json.seconds, p50: json.p50, p99: json.p99 }
}

function rssOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]) * 1024
}
/** RSS of a process and its children (a --workers primary's workers). */
function rssOfTree(pid) {
  let total = rssOf(pid)
  for (const child of execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean)) total += rssOfTree(Number(child))
  return total
}

/**
 * Self time of a .cpuprofile by where the code lives: which part of the stack a hit pays for, in µs
 * per request. Only the samples of the measured wrk round count (the last `windowUs` before the
 * process was told to stop `tailUs` before its end): start-up and module loading are left out.
 */
function profileSummary(file, windowUs, tailUs, requests) {
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const selfById = new Map()
  const dt = profile.timeDeltas
  const to = profile.endTime - tailUs
  const from = to - windowUs
  let t = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    t += dt[i] ?? 0
    if (t < from || t > to) continue
    selfById.set(profile.samples[i], (selfById.get(profile.samples[i]) ?? 0) + (dt[i] ?? 0))
  }
  const buckets = new Map()
  const functions = new Map()
  let total = 0
  for (const node of profile.nodes) {
    const us = selfById.get(node.id) ?? 0
    if (!us) continue
    const { url, functionName } = node.callFrame
    const bucket = bucketOf(url, functionName)
    buckets.set(bucket, (buckets.get(bucket) ?? 0) + us)
    const fn = `${functionName || '(anonymous)'} ${url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'dist/').replace(/^node:/, '')}`
    functions.set(fn, (functions.get(fn) ?? 0) + us)
    total += us
  }
  const busy = total - (buckets.get('(idle)') ?? 0)
  const rows = (m) => [...m].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1])
  return { busyUsPerRequest: busy / requests, buckets: rows(buckets).map(([k, us]) => [k, us / busy, us / requests]), functions: rows(functions).slice(0, 25).map(([k, us]) => [k, us / busy, us / requests]) }
}
function bucketOf(url, fn) {
  if (fn === '(idle)') return '(idle)'
  if (fn === '(garbage collector)') return 'GC'
  if (fn === '(program)') return 'V8/native (program)'
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (pkg) {
    const name = pkg[1]
    if (['express', 'router', 'finalhandler', 'parseurl', 'path-to-regexp', 'send', 'depd', 'on-finished', 'qs', 'accepts', 'type-is', 'content-type', 'vary', 'encodeurl', 'escape-html', 'merge-descriptors', 'utils-merge', 'methods', 'proxy-addr', 'forwarded', 'mime-types', 'statuses', 'cookie', 'range-parser', 'is-promise', 'debug', 'ms'].includes(name)) return `express (${name})`
    return name
  }
  if (url.includes('/dist/sidecar/')) return `sidecar: ${url.replace(/^.*\/dist\/sidecar\//, '')}`
  if (url.startsWith('node:')) return `node: ${url.slice(5)}`
  return url ? url : `native: ${fn}`
}

async function main() {
  const results = { date: new Date().toISOString(), node: process.version, path: PATH, connections: CONNECTIONS, seconds: SECONDS, rounds: ROUNDS }
  const cleanup = []
  try {
    let frontend
    if (WITH_NEXT) {
      log('building the example app (next build) ...')
      execFileSync('npm', ['run', 'build'], { cwd: APP, env: { ...process.env, ...NEXT_ENV }, stdio: ['ignore', 'ignore', 'inherit'] })
      rmSync(join(APP, NEXT_ENV.EXAMPLE_DIST_DIR, 'cache/images'), { recursive: true, force: true })
      const port = await freePort()
      const next = await start({ name: 'next', args: [NEXT_BIN, 'start', '-p', String(port), '-H', '127.0.0.1'], cwd: APP, env: NEXT_ENV, cpus: '0', port })
      cleanup.push(next)
      frontend = next
      results.next = JSON.parse(readFileSync(join(ROOT, 'node_modules/next/package.json'), 'utf8')).version
    } else {
      // The photos as `next start` serves public/.
      const server = createServer((req, res) => {
        try {
          res.writeHead(200, { 'content-type': 'image/jpeg' }).end(readFileSync(join(APP, 'public', decodeURIComponent(req.url.split('?')[0]))))
        } catch {
          res.writeHead(404).end()
        }
      }).listen(0, '127.0.0.1')
      await new Promise((r) => server.once('listening', r))
      frontend = { name: 'frontend', url: `http://127.0.0.1:${server.address().port}`, stop: async () => server.close() }
      cleanup.push(frontend)
    }
    const sidecarArgs = (port, extra = []) => [CLI, '--port', String(port), '--host', '127.0.0.1', '--frontend', frontend.url, '--config', join(APP, 'next.config.mjs'), ...extra]
    const sidecarPort = await freePort()
    const sidecar = await start({ name: 'sidecar', args: sidecarArgs(sidecarPort, ['--cache', 'memory://']), cpus: '0', port: sidecarPort, readyPath: '/readyz' })
    cleanup.push(sidecar)

    // Warm every server, and record the sidecar's HIT for the bare server.
    const first = await fetchVariant(sidecar.url)
    if (first.status !== 200) throw new Error(`sidecar answered ${first.status}`)
    const hit = await fetchVariant(sidecar.url)
    if (hit.cache !== 'HIT') throw new Error(`sidecar: expected a HIT, got ${hit.cache}`)
    const recorded = join(mkdtempSync(join(tmpdir(), 'nis-hits-')), 'response.json')
    // Names as the sidecar sends them would need the raw headers; fetch lower-cases them, which
    // is byte-for-byte the same amount of work for the bare server.
    const headers = hit.headers.filter(([name]) => !['date', 'connection', 'keep-alive'].includes(name))
    writeFileSync(recorded, JSON.stringify({ headers, body: hit.body.toString('base64') }))
    const barePort = await freePort()
    const bare = await start({ name: 'bare', args: [fileURLToPath(import.meta.url), 'bare', String(barePort), recorded], cpus: '0', port: barePort })
    cleanup.push(bare)
    const bareCheck = await fetchVariant(bare.url)
    if (!bareCheck.body.equals(hit.body)) throw new Error('the bare server does not answer the same bytes')
    results.bytes = hit.body.byteLength
    const targets = { bare, sidecar }
    if (WITH_NEXT) {
      await fetchVariant(frontend.url)
      const nextHit = await fetchVariant(frontend.url)
      if (nextHit.cache !== 'HIT') throw new Error(`next: expected a HIT, got ${nextHit.cache}`)
      targets.next = frontend
    }

    // One core each: rounds interleaved so noise on the machine falls on all alike.
    const runs = Object.fromEntries(Object.keys(targets).map((k) => [k, []]))
    for (const target of Object.values(targets)) await wrk(target.url, 2) // JIT warm-up
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, target] of Object.entries(targets)) {
        const r = await wrk(target.url)
        runs[name].push(r)
        log(`round ${round + 1} ${name}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`)
      }
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
    results.oneCore = Object.fromEntries(Object.entries(runs).map(([k, list]) => [k, { rps: median(list.map((r) => r.rps)), p50: median(list.map((r) => r.p50)), p99: median(list.map((r) => r.p99)), rounds: list.map((r) => Math.round(r.rps)) }]))
    await bare.stop()

    // RSS over a hit storm: sampled once a second while wrk runs.
    log(`hit storm, ${STORM_SECONDS} s ...`)
    const samples = []
    const sampler = setInterval(() => samples.push(rssOf(sidecar.pid)), 1000)
    const storm = await wrk(sidecar.url, STORM_SECONDS)
    clearInterval(sampler)
    const mib = (b) => Math.round((b / 1024 ** 2) * 10) / 10
    const tenth = Math.max(1, Math.floor(samples.length / 10))
    results.storm = {
      rps: storm.rps,
      seconds: STORM_SECONDS,
      rssFirstMiB: mib(median(samples.slice(0, tenth))),
      rssLastMiB: mib(median(samples.slice(-tenth))),
      rssMaxMiB: mib(Math.max(...samples)),
      rssMinMiB: mib(Math.min(...samples)),
    }
    log('storm', results.storm)

    if (PROFILE) {
      const dir = mkdtempSync(join(tmpdir(), 'nis-hits-prof-'))
      const port = await freePort()
      const profiled = await start({ name: 'profiled', args: sidecarArgs(port, ['--cache', 'memory://']), nodeFlags: ['--cpu-prof', '--cpu-prof-dir', dir], cpus: '0', port, readyPath: '/readyz', env: { SHUTDOWN_DELAY_MS: '0' } })
      await fetchVariant(profiled.url)
      await wrk(profiled.url, 2)
      const r = await wrk(profiled.url)
      const stopping = performance.now()
      await profiled.stop()
      const tailUs = (performance.now() - stopping) * 1000
      const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))
      results.profile = { rps: r.rps, file: join(dir, file), ...profileSummary(join(dir, file), (SECONDS - 0.5) * 1e6, tailUs + 0.25e6, r.rps * (SECONDS - 0.5)) }
      log(`profile: ${results.profile.file}`)
    }

    // --workers 2 against one worker, both on CPUs 0-1 with wrk (this machine has two cores).
    log('--workers 2 vs one process ...')
    const scaled = {}
    for (const [name, extra] of [['one process', []], ['--workers 2', ['--workers', '2']]]) {
      const port = await freePort()
      const cache = `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-hits-')), 'cache.sqlite')}`
      const s = await start({ name, args: sidecarArgs(port, ['--cache', cache, ...extra]), cpus: '0,1', port, readyPath: '/readyz' })
      for (let i = 0; i < 8; i++) await fetchVariant(s.url)
      await wrk(s.url, 2, '0,1', 2)
      const list = []
      for (let round = 0; round < ROUNDS; round++) list.push((await wrk(s.url, SECONDS, '0,1', 2)).rps)
      scaled[name] = median(list)
      log(`${name}: ${list.map((x) => x.toFixed(0)).join(', ')} req/s`)
      await s.stop()
    }
    results.workers = scaled

    report(results)
  } finally {
    for (const s of cleanup.reverse()) await s.stop().catch(() => {})
  }
  process.exit(0)
}

function report(results) {
  const one = results.oneCore
  const lines = [
    '# Cache hits: the sidecar against bare node:http and `next start`',
    '',
    `${results.date}, Node ${results.node}${results.next ? `, Next ${results.next}` : ''}; \`${results.path}\` (Accept ${ACCEPT}, ${results.bytes} bytes); each server pinned to CPU 0, \`wrk -t1 -c${results.connections} -d${results.seconds}s\` pinned to CPU 1; ${results.rounds} interleaved rounds, medians.`,
    '',
    '| server (one core) | req/s | vs bare node:http | p50 ms | p99 ms | req/s per round |',
    '|---|---|---|---|---|---|',
    ...Object.entries(one).map(([k, s]) => `| ${k} | ${s.rps.toFixed(0)} | ${(s.rps / one.bare.rps).toFixed(2)}× | ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${s.rounds.join(', ')} |`),
    '',
    one.next ? `Sidecar / next start: ${(one.sidecar.rps / one.next.rps).toFixed(2)}×.` : '',
    '',
    `\`--workers 2\` vs one process, both on CPUs 0-1 with \`wrk -t2\` sharing them: ${Object.entries(results.workers).map(([k, v]) => `${k} ${v.toFixed(0)} req/s`).join(', ')} (${(results.workers['--workers 2'] / results.workers['one process']).toFixed(2)}×).`,
    '',
    `Hit storm, ${results.storm.seconds} s at ${results.storm.rps.toFixed(0)} req/s: RSS ${results.storm.rssFirstMiB} MiB in the first tenth, ${results.storm.rssLastMiB} MiB in the last (min ${results.storm.rssMinMiB}, max ${results.storm.rssMaxMiB}).`,
  ]
  if (results.profile) {
    const pct = (x) => `${(x * 100).toFixed(1)}%`
    const us = (x) => x.toFixed(1)
    lines.push('', `Profile (\`node --cpu-prof\`, the measured round only, ${results.profile.rps.toFixed(0)} req/s under wrk): ${us(results.profile.busyUsPerRequest)} µs of CPU per request, self time by where it is spent:`, '', '| where | share | µs/request |', '|---|---|---|')
    lines.push(...results.profile.buckets.slice(0, 20).map(([k, v, u]) => `| ${k} | ${pct(v)} | ${us(u)} |`))
    lines.push('', '| function | share | µs/request |', '|---|---|---|', ...results.profile.functions.map(([k, v, u]) => `| ${k.replace(/\|/g, '\\|')} | ${pct(v)} | ${us(u)} |`))
  }
  const out = join(ROOT, 'bench/results')
  mkdirSync(out, { recursive: true })
  writeFileSync(join(out, 'hits.md'), `${lines.join('\n')}\n`)
  writeFileSync(join(out, 'hits.json'), `${JSON.stringify(results, null, 2)}\n`)
  process.stdout.write(`${lines.join('\n')}\n`)
}
