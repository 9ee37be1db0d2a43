// npm run bench:hits — what a cache HIT costs, from each cache tier, against the platform's ceiling and `next start`.
// Servers each pinned to CPU 0 (taskset), wrk pinned to CPU 1, the same image variant
// (/_next/image?url=/photos/dawn.jpg&w=640&q=75, Accept image/webp), interleaved rounds:
//   - bare: a node:http server writing the sidecar's response (same status, headers, bytes) from memory
//   - hot: the package's command on a HIT from the in-process tier (--cache memory://, default logging)
//   - sqlite: a HIT from the SQLite store, no hot tier (--cache sqlite://… --hot-cache-size 0)
//   - redis: a HIT from Redis, no hot tier (--cache redis://… --hot-cache-size 0); a private redis-server
//     of the bench's own, pinned to CPU 1 with wrk (BENCH_REDIS=0 leaves the tier out)
//   - next: `next start` of example-next-app on a HIT
// BENCH_BASELINE_CLI=<dir>/dist/sidecar/cli/main.js (another build, e.g. of the commit before a change:
// `npx tsc -p tsconfig.build.json --outDir .cache/nis-baseline/dist`) adds the same tiers from that build,
// interleaved in the same rounds: a before/after comparison in one run.
// Then `--workers 2` against one worker (both on CPUs 0-1, wrk sharing them: this machine has no third
// core; BENCH_WORKERS=0 skips it), and RSS of the sidecar sampled once a second over a hit storm
// (BENCH_STORM_SECONDS, default 60; 0 skips it).
// Zipf: a catalogue of 2,520 variants (120 generated JPEGs × 7 widths × 3 qualities) warmed into SQLite, then
// requests drawn Zipf(s=1) over it (wrk, paths from a pre-drawn sequence), the hot tier an eighth of the
// catalogue's bytes: plain LRU against frequency-aware admission (TinyLFU), each a sidecar on CPU 0 with
// the same SQLite file behind it, interleaved rounds; hot-tier hit ratio from the hot tier's own counts
// (BENCH_ZIPF=0 skips it; BENCH_ZIPF=only runs it alone and merges it into the last results).
// BENCH_PROFILE=1 (or a list of tiers: hot,sqlite,redis) also runs the sidecar under `node --cpu-prof` for
// one wrk round per tier and prints where the time goes (self time by module); BENCH_NEXT=0 skips
// `next build` / `next start`.
import { execFile, execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { connect, createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { servePublic, startServer } from './lib.mjs'

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
const PROFILE = process.env.BENCH_PROFILE === '1' ? ['hot'] : (process.env.BENCH_PROFILE ?? '').split(',').filter(Boolean)
const BASELINE_CLI = process.env.BENCH_BASELINE_CLI
const WITH_REDIS = process.env.BENCH_REDIS !== '0'
const WITH_WORKERS = process.env.BENCH_WORKERS !== '0'
const ZIPF = process.env.BENCH_ZIPF ?? '1'
const ZIPF_SOURCES = 120
const ZIPF_WIDTHS = [32, 48, 64, 96, 128, 256, 384]
const ZIPF_QUALITIES = [50, 75, 90]
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
} else if (process.argv[2] === 'zipf-sidecar') {
  await zipfSidecar(process.argv.slice(3))
} else if (ZIPF === 'only') {
  await zipfOnly()
} else {
  await main()
}

/**
 * `node bench/hits.mjs zipf-sidecar PORT STATS_PORT ADMISSION HOT_BYTES -- <serve flags>`: the sidecar as the
 * command builds it (same flags, same logging), its store the SQLite one of `--cache` behind a hot tier of
 * HOT_BYTES with admission on (1) or plain LRU (0); the hot tier's counts as JSON on STATS_PORT.
 */
async function zipfSidecar([port, statsPort, admission, hotBytes, , ...argv]) {
  const dist = dirname(dirname(CLI))
  const { serveSettings } = await import(join(dist, 'cli/serve.js'))
  const { createSidecar } = await import(join(dist, 'server/app.js'))
  const { openStore } = await import(join(dist, 'cache/open-store.js'))
  const { MemoryStore } = await import(join(dist, 'cache/memory-store.js'))
  const { TieredStore } = await import(join(dist, 'cache/tiered-store.js'))
  const { logLevel } = await import(join(dist, 'cli/flags.js'))
  const { pino } = await import('pino')
  const { options } = await serveSettings(argv)
  const logger = pino({ level: logLevel() })
  const cold = openStore(options.cache, logger, { hotSize: 0 }).store
  const hot = new MemoryStore({ maxSize: Number(hotBytes), maxEntrySize: Number(hotBytes) }, 'hot', { admission: admission === '1' })
  const sidecar = createSidecar({ ...options, cache: new TieredStore(hot, cold), logger })
  await sidecar.listen(Number(port), '127.0.0.1')
  createServer((_req, res) => res.end(JSON.stringify(hot.stats ?? {}))).listen(Number(statsPort), '127.0.0.1')
}

async function freePort() {
  const server = createNetServer().listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  const { port } = server.address()
  await new Promise((r) => server.close(r))
  return port
}

/** Whether something accepts connections on the port. */
function reachable(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => socket.end(() => resolve(true)))
    socket.once('error', () => resolve(false))
  })
}

/** A Node process of the bench on `cpus`, up once `readyPath` answers (lib.mjs startServer; a draining sidecar may take 15 s to stop). */
function start({ name, args, cwd = ROOT, env = {}, cpus, port, readyPath = '/', nodeFlags = [] }) {
  return startServer({ name, command: process.execPath, args: [...nodeFlags, ...args], cwd, env, cpus, url: `http://127.0.0.1:${port}`, readyPath, stopTimeoutMs: 15000 })
}

/** The response to the bench's request, as the client sees it. */
async function fetchVariant(origin) {
  const res = await fetch(`${origin}${PATH}`, { headers: { accept: ACCEPT } })
  return { status: res.status, headers: [...res.headers], cache: res.headers.get('x-nextjs-cache'), body: Buffer.from(await res.arrayBuffer()) }
}

async function wrk(origin, seconds = SECONDS, cpus = '1', threads = 1, paths) {
  // With `paths` (a file of request paths): each request the next one, in order, round and round.
  const sequence = paths
    ? `local requests = {}
local i = 0
-- Called by wrk.init once it has set the Host header, before any connection sends.
init = function(args)
  for line in io.lines(${JSON.stringify(paths)}) do requests[#requests + 1] = wrk.format("GET", line) end
end
request = function()
  i = i + 1
  if i > #requests then i = 1 end
  return requests[i]
end
`
    : ''
  const script = `wrk.headers["Accept"] = ${JSON.stringify(ACCEPT)}
${sequence}done = function(summary, latency, requests)
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
      const photos = await servePublic(APP)
      frontend = { name: 'frontend', ...photos }
      cleanup.push(frontend)
    }
    const sidecarArgs = (port, extra = [], cli = CLI) => [cli, '--port', String(port), '--host', '127.0.0.1', '--frontend', frontend.url, '--config', join(APP, 'next.config.mjs'), ...extra]
    // A private redis-server, pinned with wrk to CPU 1: the sidecar's core measures the sidecar only.
    let redisUrl
    if (WITH_REDIS) {
      const port = await freePort()
      const child = spawn('taskset', ['-c', '1', 'redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
      cleanup.push({ stop: async () => void child.kill('SIGKILL') })
      for (let i = 0; !(await reachable(port)); i++) {
        if (child.exitCode !== null || i > 100) throw new Error('redis-server did not start (BENCH_REDIS=0 leaves the Redis tier out)')
        await sleep(50)
      }
      redisUrl = `redis://127.0.0.1:${port}`
    }
    const tmp = mkdtempSync(join(tmpdir(), 'nis-hits-'))
    /** Each tier's command line; a baseline build gets its own SQLite file and Redis prefix. */
    const tiers = (tag) => ({
      hot: ['--cache', 'memory://'],
      sqlite: ['--cache', `sqlite://${join(tmp, `${tag}.sqlite`)}`, '--hot-cache-size', '0'],
      ...(redisUrl ? { redis: ['--cache', redisUrl, '--cache-prefix', `nis-hits-${tag}:`, '--hot-cache-size', '0'] } : {}),
    })
    // Each tier of the baseline build right after the same tier of this one: a pair's rounds see the same load.
    const builds = [['', CLI], ...(BASELINE_CLI ? [[' (baseline)', BASELINE_CLI]] : [])]
    const sidecars = {}
    for (const tier of Object.keys(tiers('current'))) {
      for (const [suffix, cli] of builds) {
        const port = await freePort()
        const s = await start({ name: tier + suffix, args: sidecarArgs(port, tiers(suffix ? 'baseline' : 'current')[tier], cli), cpus: '0', port, readyPath: '/readyz' })
        cleanup.push(s)
        sidecars[tier + suffix] = s
      }
    }
    const sidecar = sidecars.hot

    // Warm every server, and record the sidecar's HIT for the bare server.
    const first = await fetchVariant(sidecar.url)
    if (first.status !== 200) throw new Error(`sidecar answered ${first.status}`)
    const hit = await fetchVariant(sidecar.url)
    if (hit.cache !== 'HIT') throw new Error(`sidecar: expected a HIT, got ${hit.cache}`)
    // Every tier answers the same response (Date aside).
    const comparable = (r) => JSON.stringify(r.headers.filter(([name]) => !['date', 'x-request-id'].includes(name)))
    for (const [name, s] of Object.entries(sidecars)) {
      if (s === sidecar) continue
      await fetchVariant(s.url)
      const r = await fetchVariant(s.url)
      if (r.cache !== 'HIT') throw new Error(`${name}: expected a HIT, got ${r.cache}`)
      if (!r.body.equals(hit.body) || comparable(r) !== comparable(hit)) throw new Error(`${name}: not the same response as the hot tier's`)
    }
    const recorded = join(tmp, 'response.json')
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
    const targets = { bare, ...sidecars }
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
    // Ratios per round (the two servers measured a few seconds apart, under the same load), then their median.
    const ratioOf = (a, b) => median(runs[a].map((r, i) => r.rps / runs[b][i].rps))
    results.oneCore = Object.fromEntries(Object.entries(runs).map(([k, list]) => [k, { rps: median(list.map((r) => r.rps)), vsBare: ratioOf(k, 'bare'), ...(runs.next ? { vsNext: ratioOf(k, 'next') } : {}), ...(runs[`${k} (baseline)`] ? { vsBaseline: ratioOf(k, `${k} (baseline)`) } : {}), p50: median(list.map((r) => r.p50)), p99: median(list.map((r) => r.p99)), rounds: list.map((r) => Math.round(r.rps)) }]))
    await bare.stop()
    await Promise.all(Object.values(sidecars).filter((s) => s !== sidecar).map((s) => s.stop()))

    // RSS over a hit storm: sampled once a second while wrk runs.
    if (STORM_SECONDS > 0) {
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
    }
    await sidecar.stop()

    results.profiles = {}
    for (const tier of PROFILE) {
      const extra = tiers(`profile-${tier}`)[tier]
      if (!extra) throw new Error(`BENCH_PROFILE: no tier "${tier}" in this run`)
      const dir = mkdtempSync(join(tmpdir(), 'nis-hits-prof-'))
      const port = await freePort()
      const profiled = await start({ name: `profiled ${tier}`, args: sidecarArgs(port, extra), nodeFlags: ['--cpu-prof', '--cpu-prof-dir', dir], cpus: '0', port, readyPath: '/readyz', env: { SHUTDOWN_DELAY_MS: '0' } })
      await fetchVariant(profiled.url)
      await wrk(profiled.url, 2)
      const r = await wrk(profiled.url)
      const stopping = performance.now()
      await profiled.stop()
      const tailUs = (performance.now() - stopping) * 1000
      const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))
      results.profiles[tier] = { rps: r.rps, file: join(dir, file), ...profileSummary(join(dir, file), (SECONDS - 0.5) * 1e6, tailUs + 0.25e6, r.rps * (SECONDS - 0.5)) }
      log(`profile of ${tier}: ${results.profiles[tier].file}`)
    }

    // --workers 2 against one worker, both on CPUs 0-1 with wrk (this machine has two cores).
    if (WITH_WORKERS) {
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
    }

    if (ZIPF !== '0') results.zipf = await zipfBench(cleanup)
    report(results)
  } finally {
    for (const s of cleanup.reverse()) await s.stop().catch(() => {})
  }
  process.exit(0)
}

function report(results) {
  const one = results.oneCore
  const x = (r) => (r === undefined ? '–' : `${r.toFixed(2)}×`)
  const lines = [
    '# Cache hits from each tier: the sidecar against bare node:http and `next start`',
    '',
    `${results.date}, Node ${results.node}${results.next ? `, Next ${results.next}` : ''}; \`${results.path}\` (Accept ${ACCEPT}, ${results.bytes} bytes); each server pinned to CPU 0, \`wrk -t1 -c${results.connections} -d${results.seconds}s\` pinned to CPU 1; ${results.rounds} interleaved rounds; req/s the median of the rounds, ratios the median of the per-round ratios. hot: \`--cache memory://\`; sqlite: \`--cache sqlite://… --hot-cache-size 0\`; redis: \`--cache redis://… --hot-cache-size 0\` (a private redis-server on CPU 1).`,
    '',
    `| server (one core) | req/s | vs bare node:http |${one.next ? ' vs next start |' : ''} p50 ms | p99 ms | req/s per round |`,
    `|---|---|---|${one.next ? '---|' : ''}---|---|---|`,
    ...Object.entries(one).map(([k, s]) => `| ${k} | ${s.rps.toFixed(0)} | ${x(s.vsBare)} |${one.next ? ` ${x(s.vsNext)} |` : ''} ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${s.rounds.join(', ')} |`),
  ]
  const baselines = Object.keys(one).filter((k) => k.endsWith(' (baseline)'))
  if (baselines.length) {
    lines.push('', 'This build against the baseline build (BENCH_BASELINE_CLI), same rounds:', '', '| tier | baseline req/s | this build req/s | after / before |', '|---|---|---|---|')
    for (const k of baselines) {
      const tier = k.slice(0, -' (baseline)'.length)
      lines.push(`| ${tier} | ${one[k].rps.toFixed(0)} | ${one[tier].rps.toFixed(0)} | ${x(one[tier].vsBaseline)} |`)
    }
  }
  if (results.workers) lines.push('', `\`--workers 2\` vs one process, both on CPUs 0-1 with \`wrk -t2\` sharing them: ${Object.entries(results.workers).map(([k, v]) => `${k} ${v.toFixed(0)} req/s`).join(', ')} (${(results.workers['--workers 2'] / results.workers['one process']).toFixed(2)}×).`)
  if (results.storm) lines.push('', `Hit storm (hot tier), ${results.storm.seconds} s at ${results.storm.rps.toFixed(0)} req/s: RSS ${results.storm.rssFirstMiB} MiB in the first tenth, ${results.storm.rssLastMiB} MiB in the last (min ${results.storm.rssMinMiB}, max ${results.storm.rssMaxMiB}).`)
  for (const [tier, profile] of Object.entries(results.profiles ?? {})) {
    const pct = (x) => `${(x * 100).toFixed(1)}%`
    const us = (x) => x.toFixed(1)
    lines.push('', `Profile of the ${tier} tier (\`node --cpu-prof\`, the measured round only, ${profile.rps.toFixed(0)} req/s under wrk): ${us(profile.busyUsPerRequest)} µs of CPU per request, self time by where it is spent:`, '', '| where | share | µs/request |', '|---|---|---|')
    lines.push(...profile.buckets.slice(0, 20).map(([k, v, u]) => `| ${k} | ${pct(v)} | ${us(u)} |`))
    lines.push('', '| function | share | µs/request |', '|---|---|---|', ...profile.functions.map(([k, v, u]) => `| ${k.replace(/\|/g, '\\|')} | ${pct(v)} | ${us(u)} |`))
  }
  if (results.zipf) {
    const z = results.zipf
    const pct = (x) => `${(x * 100).toFixed(1)}%`
    lines.push(
      '',
      '## Zipf workload: the hot tier, plain LRU against frequency-aware admission',
      '',
      `${z.date}: ${z.variants} variants (${z.sources} generated JPEGs × ${z.widths.length} widths × ${z.qualities.length} qualities, Accept ${ACCEPT}), ${(z.catalogueBytes / 1024 ** 2).toFixed(1)} MiB in all, warmed into one SQLite file; the hot tier ${(z.hotBytes / 1024 ** 2).toFixed(2)} MiB (an eighth of the catalogue), both sidecars reading the same file behind it. Requests: a pre-drawn sequence of ${z.sequence} paths, Zipf s=${z.s} over the variants (the top 1% of variants draw ${pct(z.top1)} of the requests, the top eighth ${pct(z.topEighth)}); each sidecar pinned to CPU 0, \`wrk -t1 -c${results.connections} -d${z.seconds}s\` on CPU 1, ${z.rounds} interleaved rounds after a ${z.warmSeconds} s warm-up each; hit ratio: the hot tier's own count of lookups answered, over the measured rounds.`,
      '',
      '| hot tier | req/s | hot-tier hit ratio | req/s per round | hit ratio per round |',
      '|---|---|---|---|---|',
      ...Object.entries(z.policies).map(([k, p]) => `| ${k} | ${p.rps.toFixed(0)} | ${pct(p.hitRatio)} | ${p.rounds.join(', ')} | ${p.hitRatios.map(pct).join(', ')} |`),
      '',
      `Admission against LRU, same rounds: ${z.rpsRatio.toFixed(2)}× the req/s (median of the per-round ratios), hit ratio ${pct(z.policies.admission.hitRatio)} against ${pct(z.policies.lru.hitRatio)}; ${z.policies.admission.rejected} new keys turned away by admission in the measured rounds.`,
    )
  }
  const out = join(ROOT, 'bench/results')
  mkdirSync(out, { recursive: true })
  writeFileSync(join(out, 'hits.md'), `${lines.join('\n')}\n`)
  writeFileSync(join(out, 'hits.json'), `${JSON.stringify(results, null, 2)}\n`)
  process.stdout.write(`${lines.join('\n')}\n`)
}

/** BENCH_ZIPF=only: the Zipf section alone, merged into the last run's results (its own date says when). */
async function zipfOnly() {
  const cleanup = []
  try {
    const last = JSON.parse(readFileSync(join(ROOT, 'bench/results/hits.json'), 'utf8'))
    last.zipf = await zipfBench(cleanup)
    report(last)
  } finally {
    for (const s of cleanup.reverse()) await s.stop().catch(() => {})
  }
  process.exit(0)
}

/** Zipf(s) ranks 0..n-1, drawn with a seeded generator (the same sequence every run). */
function zipfSequence(n, s, length, seed = 1) {
  const cdf = new Float64Array(n)
  let acc = 0
  for (let i = 0; i < n; i++) cdf[i] = acc += 1 / (i + 1) ** s
  for (let i = 0; i < n; i++) cdf[i] /= acc
  let state = seed >>> 0
  const random = () => {
    // mulberry32
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
  const ranks = new Uint32Array(length)
  for (let j = 0; j < length; j++) {
    const u = random()
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (cdf[mid] < u) lo = mid + 1
      else hi = mid
    }
    ranks[j] = lo
  }
  return { ranks, random, cdf }
}

async function zipfBench(cleanup) {
  const sharp = (await import('sharp')).default
  const tmp = mkdtempSync(join(tmpdir(), 'nis-hits-zipf-'))
  log(`zipf: generating ${ZIPF_SOURCES} source images ...`)
  const images = join(tmp, 'public')
  mkdirSync(join(images, 'zipf'), { recursive: true })
  for (let i = 0; i < ZIPF_SOURCES; i++) {
    // A gradient with noise, a hue per image: photo-like bytes, each image its own.
    const w = 384
    const h = 256
    const raw = Buffer.alloc(w * h * 3)
    let seed = i * 7919 + 1
    for (let p = 0; p < w * h; p++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
      const noise = (seed >>> 24) & 63
      const x = p % w
      const y = Math.floor(p / w)
      raw[p * 3] = (x + i * 37 + noise) & 255
      raw[p * 3 + 1] = (y + i * 61 + noise) & 255
      raw[p * 3 + 2] = ((x ^ y) + i * 13) & 255
    }
    await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 85 }).toFile(join(images, 'zipf', `${i}.jpg`))
  }
  const frontend = createServer((req, res) => {
    let bytes
    try {
      bytes = readFileSync(join(images, decodeURIComponent(req.url.split('?')[0])))
    } catch {
      return void res.writeHead(404).end()
    }
    res.writeHead(200, { 'content-type': 'image/jpeg' }).end(bytes)
  }).listen(0, '127.0.0.1')
  await new Promise((r) => frontend.once('listening', r))
  cleanup.push({ stop: async () => void frontend.close() })
  const frontendUrl = `http://127.0.0.1:${frontend.address().port}`
  const variants = []
  for (let i = 0; i < ZIPF_SOURCES; i++) for (const w of ZIPF_WIDTHS) for (const q of ZIPF_QUALITIES) variants.push(`/_next/image?url=${encodeURIComponent(`/zipf/${i}.jpg`)}&w=${w}&q=${q}`)
  const cache = `sqlite://${join(tmp, 'zipf.sqlite')}`
  const serveFlags = ['--frontend', frontendUrl, '--config', join(APP, 'next.config.mjs'), '--cache', cache, '--hot-cache-size', '0']

  // Warm pass: every variant once into SQLite (the command itself, no hot tier), its bytes counted.
  log(`zipf: warming ${variants.length} variants into SQLite ...`)
  const warmPort = await freePort()
  const warm = await start({ name: 'zipf warm', args: [CLI, '--port', String(warmPort), '--host', '127.0.0.1', ...serveFlags], port: warmPort, readyPath: '/readyz' })
  let catalogueBytes = 0
  let next = 0
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < variants.length) {
        const path = variants[next++]
        const res = await fetch(`${warm.url}${path}`, { headers: { accept: ACCEPT } })
        const body = await res.arrayBuffer()
        if (res.status !== 200) throw new Error(`zipf warm: ${path} answered ${res.status}`)
        catalogueBytes += body.byteLength
      }
    }),
  )
  await warm.stop()

  // The request sequence: ranks drawn Zipf(1), each rank a variant (a seeded shuffle: popularity not tied to width or source).
  const S = 1
  const LENGTH = 200_000
  const { ranks, random, cdf } = zipfSequence(variants.length, S, LENGTH)
  const order = variants.map((_, i) => i)
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  const pathsFile = join(tmp, 'zipf-paths.txt')
  writeFileSync(pathsFile, `${Array.from(ranks, (r) => variants[order[r]]).join('\n')}\n`)
  const hotBytes = Math.floor(catalogueBytes / 8)

  const servers = {}
  for (const [name, admission] of [['lru', '0'], ['admission', '1']]) {
    const port = await freePort()
    const statsPort = await freePort()
    const s = await start({ name: `zipf ${name}`, args: [fileURLToPath(import.meta.url), 'zipf-sidecar', String(port), String(statsPort), admission, String(hotBytes), '--', ...serveFlags], cpus: '0', port, readyPath: '/readyz' })
    cleanup.push(s)
    servers[name] = { ...s, stats: async () => (await fetch(`http://127.0.0.1:${statsPort}/`)).json() }
    const r = await fetch(`${s.url}${variants[0]}`, { headers: { accept: ACCEPT } })
    await r.arrayBuffer()
    if (r.headers.get('x-nextjs-cache') !== 'HIT') throw new Error(`zipf ${name}: expected a HIT from the warmed SQLite file, got ${r.headers.get('x-nextjs-cache')}`)
  }
  const WARM_SECONDS = 4
  for (const s of Object.values(servers)) await wrk(s.url, WARM_SECONDS, '1', 1, pathsFile)
  const runs = Object.fromEntries(Object.keys(servers).map((k) => [k, []]))
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, s] of Object.entries(servers)) {
      const before = await s.stats()
      const r = await wrk(s.url, SECONDS, '1', 1, pathsFile)
      const after = await s.stats()
      const hits = after.hits - before.hits
      const misses = after.misses - before.misses
      runs[name].push({ ...r, hitRatio: hits / (hits + misses), rejected: after.rejected - before.rejected })
      log(`zipf round ${round + 1} ${name}: ${r.rps.toFixed(0)} req/s, hot-tier hit ratio ${((100 * hits) / (hits + misses)).toFixed(1)}%`)
    }
  }
  for (const s of Object.values(servers)) await s.stop()
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const policies = Object.fromEntries(
    Object.entries(runs).map(([k, list]) => [
      k,
      { rps: median(list.map((r) => r.rps)), hitRatio: median(list.map((r) => r.hitRatio)), rounds: list.map((r) => Math.round(r.rps)), hitRatios: list.map((r) => r.hitRatio), rejected: list.reduce((a, r) => a + r.rejected, 0), p50: median(list.map((r) => r.p50)), p99: median(list.map((r) => r.p99)) },
    ]),
  )
  return {
    date: new Date().toISOString(),
    sources: ZIPF_SOURCES,
    widths: ZIPF_WIDTHS,
    qualities: ZIPF_QUALITIES,
    variants: variants.length,
    catalogueBytes,
    hotBytes,
    s: S,
    sequence: LENGTH,
    top1: cdf[Math.floor(variants.length / 100) - 1],
    topEighth: cdf[Math.floor(variants.length / 8) - 1],
    seconds: SECONDS,
    rounds: ROUNDS,
    warmSeconds: WARM_SECONDS,
    policies,
    rpsRatio: median(runs.admission.map((r, i) => r.rps / runs.lru[i].rps)),
  }
}
