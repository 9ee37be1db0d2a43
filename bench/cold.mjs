#!/usr/bin/env node
// `node bench/cold.mjs` (after `npx tsc -p tsconfig.build.json`): the cold path on one pinned core against
// in-process sharp (run.mjs's P / S0 reference), and where the difference goes. On CPU 1: in-process sharp
// (Next's transform, one image at a time, from files) and the sidecar's command (bin/next-image-sidecar, its
// shipped allocator; a fresh SQLite cache each round) answering the same 60 cold variants at c8; the frontend
// (a node:http server of the same files) and the load on CPU 0. Rounds interleaved; each also records the CPU
// time (utime + stime, all threads, from /proc) the process spent per image, so the report says what the
// sidecar adds to each transform, not only its throughput.
// BENCH_BASELINE_ROOT=<dir with bin/ and dist/> adds another build to the same rounds (before/after in one run).
// BENCH_PROFILE=1 runs the sidecar once more under `node --cpu-prof` and prints its main thread's busy time
// by function. BENCH_ROUNDS (4). Writes bench/results/cold.{json,md}. Loads only 127.0.0.1.
import { execFile, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { freePort, runList, startServer } from './lib.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const APP = join(ROOT, 'example-next-app')
const CORPUS = join(ROOT, '../shared/corpus')
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4)
const BASELINE_ROOT = process.env.BENCH_BASELINE_ROOT
const PROFILE = process.env.BENCH_PROFILE === '1'
const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }))
const log = (...args) => console.error('[bench:cold]', ...args)

// The same set as run.mjs's S1 / P: every JPEG photo and the 4K one, at five widths, as WebP q75.
const photos = [...readdirSync(join(CORPUS, 'photo-jpeg')).sort().map((f) => `photo-jpeg/${f}`), 'large/elephants-3840x2160.jpg']
const WIDTHS = [640, 828, 1080, 1200, 1920]
const coldSet = photos.flatMap((p) => WIDTHS.map((w) => ({ file: p, width: w, path: `/_next/image?url=${encodeURIComponent(`/bench/${p.replace('/', '-')}`)}&w=${w}&q=75` })))

function cpuUs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) * TICK_US
}

/** In-process sharp on CPU 1: images/s and CPU µs per image of the loop (process.cpuUsage, all threads). */
async function inProcess(root) {
  const dist = join(root, 'dist/sidecar')
  const script = `
    const { readFileSync } = await import('node:fs')
    const { optimizeImage } = await import(${JSON.stringify(join(dist, 'image/transform.js'))})
    const { resolveNextConfig } = await import(${JSON.stringify(join(dist, 'next/images-config.js'))})
    const config = resolveNextConfig({}).sharp
    const inputs = ${JSON.stringify(coldSet.map((c) => ({ file: join(CORPUS, c.file), width: c.width })))}.map((i) => ({ buffer: readFileSync(i.file), width: i.width }))
    const cpu = process.cpuUsage()
    const started = performance.now()
    for (const { buffer, width } of inputs) await optimizeImage(buffer, 'image/webp', width, 75, config)
    const seconds = (performance.now() - started) / 1000
    const used = process.cpuUsage(cpu)
    console.log(JSON.stringify({ rps: inputs.length / seconds, cpuUsPerImage: (used.user + used.system) / inputs.length }))`
  const { stdout } = await promisify(execFile)('taskset', ['-c', '1', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 300_000 })
  return JSON.parse(stdout.trim())
}

async function sidecar(root, frontend, nodeFlags = []) {
  const port = await freePort()
  const cache = join(mkdtempSync(join(tmpdir(), 'nis-cold-')), 'cache.sqlite')
  const args = ['--port', String(port), '--host', '127.0.0.1', '--frontend', frontend, '--config', join(APP, 'next.config.mjs'), '--cache', `sqlite://${cache}`, '--max-attempts', '1']
  return startServer({
    name: 'sidecar',
    // The package's command (its allocator); under --cpu-prof, node itself with the same preload.
    command: nodeFlags.length ? process.execPath : join(root, 'bin/next-image-sidecar'),
    args: nodeFlags.length ? [...nodeFlags, join(root, 'dist/sidecar/cli/main.js'), ...args] : args,
    cwd: ROOT,
    env: { LOG_LEVEL: 'warn', LD_PRELOAD: nodeFlags.length ? jemalloc() : '', MALLOC_CONF: '', NIS_ALLOCATOR: '', SHUTDOWN_DELAY_MS: '0' },
    cpus: '1',
    url: `http://127.0.0.1:${port}`,
    readyPath: '/readyz',
    stopTimeoutMs: 15000,
  })
}
const jemalloc = () => ['/usr/lib/x86_64-linux-gnu/libjemalloc.so.2', '/usr/lib64/libjemalloc.so.2'].find((f) => existsSync(f)) ?? ''

async function coldRun(root, frontend) {
  const s = await sidecar(root, frontend)
  try {
    const before = cpuUs(s.pid)
    const { latencies, ...r } = await runList(coldSet.map((c) => `${s.url}${c.path}`), 8, { accept: 'image/webp' })
    if (r.failed) throw new Error(`${r.failed} cold requests failed`)
    return { rps: r.rps, cpuUsPerImage: (cpuUs(s.pid) - before) / coldSet.length, p50: r.p50 }
  } finally {
    await s.stop()
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

// This process (load, frontend) on CPU 0.
execFileSync('taskset', ['-apc', '0', String(process.pid)], { stdio: 'ignore' })
const files = new Map(coldSet.map((c) => [`/bench/${c.file.replace('/', '-')}`, readFileSync(join(CORPUS, c.file))]))
const frontendServer = createServer((req, res) => {
  const bytes = files.get(decodeURIComponent(req.url.split('?')[0]))
  if (!bytes) return void res.writeHead(404).end()
  res.writeHead(200, { 'content-type': 'image/jpeg', 'cache-control': 'public, max-age=0' }).end(bytes)
}).listen(0, '127.0.0.1')
await new Promise((r) => frontendServer.once('listening', r))
const frontend = `http://127.0.0.1:${frontendServer.address().port}`

const builds = [['sidecar', ROOT], ...(BASELINE_ROOT ? [['sidecar (baseline)', BASELINE_ROOT]] : [])]
const runs = { 'in-process sharp': [], ...Object.fromEntries(builds.map(([name]) => [name, []])) }
for (let round = 0; round < ROUNDS; round++) {
  runs['in-process sharp'].push(await inProcess(ROOT))
  for (const [name, root] of builds) runs[name].push(await coldRun(root, frontend))
  log(`round ${round + 1}: ${Object.entries(runs).map(([k, v]) => `${k} ${v.at(-1).rps.toFixed(2)}/s ${(v.at(-1).cpuUsPerImage / 1000).toFixed(1)} ms CPU`).join(', ')}`)
}
const summary = Object.fromEntries(
  Object.entries(runs).map(([k, list]) => [
    k,
    {
      rps: median(list.map((r) => r.rps)),
      vsSharp: median(list.map((r, i) => r.rps / runs['in-process sharp'][i].rps)),
      cpuMsPerImage: median(list.map((r) => r.cpuUsPerImage)) / 1000,
      cpuVsSharp: median(list.map((r, i) => r.cpuUsPerImage / runs['in-process sharp'][i].cpuUsPerImage)),
      rounds: list.map((r) => Number(r.rps.toFixed(2))),
    },
  ]),
)
const results = { date: new Date().toISOString(), node: process.version, images: coldSet.length, rounds: ROUNDS, summary, runs }

if (PROFILE) {
  const dir = mkdtempSync(join(tmpdir(), 'nis-cold-prof-'))
  const s = await sidecar(ROOT, frontend, ['--cpu-prof', '--cpu-prof-dir', dir])
  const started = performance.now()
  await runList(coldSet.map((c) => `${s.url}${c.path}`), 8, { accept: 'image/webp' })
  const windowUs = (performance.now() - started) * 1000
  await s.stop()
  const file = join(dir, readdirSync(dir).find((f) => f.endsWith('.cpuprofile')))
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const self = new Map()
  let t = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0
    self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  const byFn = new Map()
  let busy = 0
  for (const node of profile.nodes) {
    const us = self.get(node.id) ?? 0
    const { functionName, url } = node.callFrame
    if (!us || functionName === '(idle)') continue
    const key = `${functionName || '(anonymous)'} ${url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'dist/').replace(/^node:/, '')}`
    byFn.set(key, (byFn.get(key) ?? 0) + us)
    busy += us
  }
  results.profile = { file, windowMs: windowUs / 1000, busyMsPerImage: busy / 1000 / coldSet.length, top: [...byFn].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([k, us]) => [k, us / 1000 / coldSet.length]) }
}
frontendServer.close()

const f = (x, d = 2) => x.toFixed(d)
const lines = [
  '# The cold path on one pinned core against in-process sharp',
  '',
  `${results.date}, Node ${results.node}; ${coldSet.length} cold variants (run.mjs's S1/P set: the corpus JPEGs and the 4K photo at ${WIDTHS.join(', ')} px, WebP q75); everything measured on CPU 1 (taskset), frontend and load on CPU 0; ${ROUNDS} interleaved rounds; medians; ratios the median of per-round ratios. CPU: utime + stime of the process (all threads) per image.`,
  '',
  '| one pinned core | images/s | ÷ in-process sharp | CPU ms per image | CPU ÷ in-process sharp | images/s per round |',
  '|---|---|---|---|---|---|',
  ...Object.entries(summary).map(([k, s]) => `| ${k} | ${f(s.rps)} | **${f(s.vsSharp)}×** | ${f(s.cpuMsPerImage, 1)} | ${f(s.cpuVsSharp)}× | ${s.rounds.join(', ')} |`),
]
if (results.profile) {
  lines.push('', `The sidecar's main thread under \`node --cpu-prof\` (one more pass): ${f(results.profile.busyMsPerImage)} ms busy per image (the rest of each transform runs on libvips' threads), by function:`, '', '| function | ms per image |', '|---|---|')
  lines.push(...results.profile.top.map(([k, ms]) => `| ${k.replace(/\|/g, '\\|')} | ${f(ms, 3)} |`))
}
mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
writeFileSync(join(ROOT, 'bench/results/cold.json'), JSON.stringify(results, null, 2))
writeFileSync(join(ROOT, 'bench/results/cold.md'), `${lines.join('\n')}\n`)
console.log(lines.join('\n'))
process.exit(0)
