// `npm run bench:memory`: memory in a pod-sized cgroup (cgroup v1, as Kubernetes makes one for
// limits.memory and limits.cpu), the sidecar and Next's built-in optimizer side by side in one run:
//   M1 burst: 60 distinct cold variants (widths 640–3840 of photos up to 16.8 MP) at 32 concurrent
//             requests, in 256 MiB / 1 CPU: survived?, 200s / 503s / errors, peak, RSS 20 s after;
//   M2 soak:  BENCH_SOAK_MINUTES (10) of new variants mixed with hits, RSS every second, its trend;
//   M3 cold throughput at 1 CPU: the sidecar vs in-process sharp (Next's transform) on one core,
//             and the sidecar without memory admission, to show what admission costs;
//   M4 burst served: 44 distinct large cold variants (test/http/burst.test.ts) at c32 in
//             BENCH_BURST_SIZES (256,384,512) MiB / 1 CPU, the package's command: share answered 200,
//             the refusals (503 + Retry-After), OOM kills, RSS idle / peak / 20 s after.
// Writes bench/results/memory.{md,json} and the RSS plots memory-burst.svg, memory-soak.svg.
// Needs root (it creates and removes its own cgroups).
import { execFileSync, spawn } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { burst, freePort, get, lineChart, slope } from './lib.mjs'
import { PodCgroup } from '../test/helpers/cgroup.ts'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const APP = join(ROOT, 'example-next-app')
const CORPUS = join(ROOT, '../shared/corpus')
const NEXT_BIN = join(ROOT, 'node_modules/next/dist/bin/next')
// BENCH_TARGET_ROOT: run another checkout's command (its bin/ and dist/), e.g. a `git archive` snapshot.
const BIN = join(process.env.BENCH_TARGET_ROOT ?? ROOT, 'bin/next-image-sidecar')
const DIST = '.next-bench-memory'
const MiB = 1024 ** 2
const POD_MEMORY = Number(process.env.BENCH_POD_MIB ?? 256) * MiB
const SECTIONS = (process.env.BENCH_SECTIONS ?? 'M1,M2,M3,M4').split(',')
const BURST_SIZES = (process.env.BENCH_BURST_SIZES ?? '256,384,512').split(',').map(Number)
const SOAK_MINUTES = Number(process.env.BENCH_SOAK_MINUTES ?? 10)
const AFTER_SECONDS = 20
const env = { NEXT_TELEMETRY_DISABLED: '1', EXAMPLE_DIST_DIR: DIST, NODE_ENV: 'production' }
const log = (...args) => console.error('[bench:memory]', ...args)
const round = (n, digits = 1) => (Number.isFinite(n) ? Number(n.toFixed(digits)) : n)

// ---------------------------------------------------------------- setup
const photos = ['large/elephants-3840x2160.jpg', 'large/truchet-dark-4096.webp', 'large/float-into-mate.png', ...['storm', 'garden', 'aqua', 'aqua-cmyk', 'ladybird', 'green-meadow', 'garden-progressive', 'rocket', 'fresh-flower'].map((f) => `photo-jpeg/${f}.jpg`)]
// M4: the burst of test/http/burst.test.ts.
const M4_FILES = ['large/elephants-3840x2160.jpg', 'large/truchet-dark-4096.webp', 'large/float-into-mate.png', 'photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/aqua.jpg', 'photo-jpeg/aqua-cmyk.jpg', 'photo-jpeg/ladybird-exif-rotate-6.jpg', 'photo-jpeg/green-meadow.jpg', 'photo-jpeg/garden-progressive.jpg', 'photo-jpeg/rocket.jpg']
mkdirSync(join(APP, 'public/bench'), { recursive: true })
for (const p of new Set([...photos, ...M4_FILES])) cpSync(join(CORPUS, p), join(APP, 'public/bench', p.replace('/', '-')))
const src = (p) => `/bench/${p.replace('/', '-')}`
const imagePath = (p, w, q = 75) => `/_next/image?url=${encodeURIComponent(src(p))}&w=${w}&q=${q}`
const burstSet = photos.slice(0, 10).flatMap((p) => [640, 750, 1080, 1920, 2048, 3840].map((w) => imagePath(p, w)))
const m4Set = M4_FILES.flatMap((p) => [640, 1080, 1920, 3840].map((w) => imagePath(p, w)))

log('building the example app (default loader) ...')
execFileSync('npm', ['run', 'build'], { cwd: APP, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] })

/** Resident memory charged to the cgroup (anonymous memory: what the OOM killer weighs), bytes. */
function groupRss(group) {
  return Number(/^total_rss (\d+)/m.exec(readFileSync(`/sys/fs/cgroup/memory/${group.name}/memory.stat`, 'utf8'))?.[1] ?? 0)
}

/** Starts a command in `group` and waits for `readyUrl`. */
async function startIn(group, command, args, readyUrl, extraEnv = {}, cwd = ROOT) {
  const child = group.spawn(command, args, { env: { ...process.env, ...env, LOG_LEVEL: 'warn', ...extraEnv }, cwd, stdio: ['ignore', 'ignore', 'inherit'] })
  let exit
  child.on('exit', (code, signal) => (exit = { code, signal }))
  for (let i = 0; ; i++) {
    if (exit) throw new Error(`${command} exited before it answered: ${JSON.stringify(exit)}`)
    try {
      await (await fetch(readyUrl)).arrayBuffer()
      break
    } catch {
      if (i > 600) throw new Error(`${command} did not start`)
      await sleep(100)
    }
  }
  return {
    child,
    exited: () => exit,
    async stop() {
      if (exit) return
      const done = new Promise((r) => child.once('exit', r))
      child.kill('SIGKILL')
      await done
    },
  }
}

/** A Next app outside any limit, serving the originals to the sidecar (as the frontend does in a pod of its own). */
async function startFrontend() {
  const port = await freePort()
  const child = spawn(process.execPath, [NEXT_BIN, 'start', '-p', String(port), '-H', '127.0.0.1'], { cwd: APP, env: { ...process.env, ...env }, stdio: 'ignore' })
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; i < 600; i++) {
    try {
      await (await fetch(`${url}/bench/${photos[0].replace('/', '-')}`)).arrayBuffer()
      break
    } catch {
      await sleep(100)
    }
  }
  return { url, stop: () => child.kill('SIGKILL') }
}

async function startSidecarIn(group, frontend, extraArgs = [], extraEnv = {}, command = BIN, commandArgs = []) {
  const port = await freePort()
  const cache = join(mkdtempSync(join(tmpdir(), 'nis-bench-mem-')), 'cache.sqlite')
  const url = `http://127.0.0.1:${port}`
  const args = ['--port', String(port), '--host', '127.0.0.1', '--frontend', frontend, '--config', join(APP, 'next.config.mjs'), '--cache', `sqlite://${cache}`, '--max-attempts', '1', ...extraArgs]
  return { url, ...(await startIn(group, command, [...commandArgs, ...args], `${url}/readyz`, extraEnv)) }
}

async function startNextIn(group) {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  // Next's image cache directory starts empty, as for the sidecar.
  execFileSync('rm', ['-rf', join(APP, DIST, 'cache/images')])
  return { url, ...(await startIn(group, process.execPath, [NEXT_BIN, 'start', '-p', String(port), '-H', '127.0.0.1'], `${url}/`, {}, APP)) }
}

/** Samples the group's RSS every second into `points` ([seconds, MiB]) until stopped. */
function sampler(group, points, t0 = performance.now()) {
  const take = () => points.push([(performance.now() - t0) / 1000, groupRss(group) / MiB])
  take()
  const timer = setInterval(take, 1000)
  return () => clearInterval(timer)
}

const results = { settings: { podMemoryMiB: POD_MEMORY / MiB, cpus: 1, burstVariants: burstSet.length, burstConcurrency: 32, soakMinutes: SOAK_MINUTES }, M1: {}, M2: {}, M3: {}, M4: {} }
const frontend = await startFrontend()

// ---------------------------------------------------------------- M1: the burst, Next and the sidecar in the same pod size
const burstPlot = []
for (const name of SECTIONS.includes('M1') ? ['next', 'sidecar'] : []) {
  log(`M1 burst: ${name} in ${POD_MEMORY / MiB} MiB / 1 CPU`)
  const group = PodCgroup.create(POD_MEMORY, 1)
  const server = name === 'next' ? await startNextIn(group) : await startSidecarIn(group, frontend.url)
  await sleep(2000)
  const idle = groupRss(group)
  const points = []
  const stopSampling = sampler(group, points)
  const counts = await burst(server.url, burstSet, 32)
  const afterBurst = groupRss(group)
  await sleep(AFTER_SECONDS * 1000)
  stopSampling()
  const oomKills = group.oomKills
  const survived = oomKills === 0 && !server.exited()
  results.M1[name] = { survived, oomKills, ...counts, idleMiB: idle / MiB, peakMiB: Math.max(...points.map((p) => p[1])), afterBurstMiB: afterBurst / MiB, after20sMiB: survived ? groupRss(group) / MiB : undefined }
  burstPlot.push({ name: `${name}${survived ? '' : ' (OOM-killed)'}`, points })
  await server.stop()
  await group.remove()
}

// ---------------------------------------------------------------- M2: the soak
if (SECTIONS.includes('M2')) {
  log(`M2 soak: ${SOAK_MINUTES} min`)
  const group = PodCgroup.create(POD_MEMORY, 1)
  const sidecar = await startSidecarIn(group, frontend.url)
  const widths = [16, 32, 48, 64, 96, 128, 256, 384, 640, 750, 828, 1080, 1200, 1920, 2048, 3840]
  const pool = photos.flatMap((p) => widths.flatMap((w) => [50, 75, 90].flatMap((q) => ['image/webp', 'image/jpeg'].map((accept) => ({ path: imagePath(p, w, q), accept })))))
  // A fixed shuffle, so every run sees the same sequence.
  let seed = 42
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  for (let i = pool.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[pool[i], pool[j]] = [pool[j], pool[i]]
  }
  const served = []
  const counts = { new: 0, hits: 0, 200: 0, 503: 0, errors: 0 }
  const points = []
  const stopSampling = sampler(group, points)
  const until = performance.now() + SOAK_MINUTES * 60_000
  let fresh = 0
  // A steady stream, as a site's image traffic is: 4 requests a second, one of them a variant never
  // asked for before (a transform), the others revisits of served ones (hits).
  for (let tick = 0; performance.now() < until; tick++) {
    const due = performance.now() + 250
    const isNew = tick % 4 === 0 || served.length === 0
    const variant = isNew ? pool[fresh++ % pool.length] : served[Math.floor(random() * served.length)]
    try {
      const res = await get(`${sidecar.url}${variant.path}`, { accept: variant.accept })
      counts[isNew ? 'new' : 'hits']++
      if (res.status === 200) (counts[200]++, isNew && served.push(variant))
      else if (res.status === 503) counts[503]++
    } catch {
      counts.errors++
    }
    await sleep(Math.max(due - performance.now(), 0))
  }
  stopSampling()
  const afterWarmUp = points.filter(([t]) => t >= 120).map(([t, mib]) => [t / 60, mib])
  // Transforms make RSS spike and fall; the floor between them (the 10th percentile of each minute)
  // is what would show a leak.
  const perMinute = Array.from({ length: SOAK_MINUTES }, (_, m) => {
    const minute = points.filter(([t]) => t >= m * 60 && t < (m + 1) * 60).map((p) => p[1]).sort((a, b) => a - b)
    return { minute: m + 1, p10: minute[Math.floor(minute.length * 0.1)], p50: minute[Math.floor(minute.length / 2)], max: minute.at(-1) }
  })
  const floors = perMinute.filter((m) => m.minute > 2 && m.p10 !== undefined).map((m) => [m.minute, m.p10])
  results.M2 = {
    perMinute,
    floorTrendMiBPerMinute: slope(floors),
    survived: group.oomKills === 0 && !sidecar.exited(),
    ...counts,
    peakMiB: Math.max(...points.map((p) => p[1])),
    trendMiBPerMinute: slope(afterWarmUp),
    firstMinuteMiB: points.find(([t]) => t >= 60)?.[1],
    lastMiB: points.at(-1)?.[1],
  }
  writeFileSync(join(ROOT, 'bench/results/memory-soak.svg'), lineChart({ title: `Sidecar RSS during a ${SOAK_MINUTES}-minute soak in ${POD_MEMORY / MiB} MiB / 1 CPU`, xLabel: 'seconds', yLabel: 'RSS (MiB)', series: [{ name: 'sidecar', points }], limit: { value: POD_MEMORY / MiB, label: 'limit' } }))
  await sidecar.stop()
  await group.remove()
}

// ---------------------------------------------------------------- M3: cold throughput at 1 CPU
if (SECTIONS.includes('M3')) {
  log('M3 cold throughput at 1 CPU')
  const cold = photos.filter((p) => p.startsWith('photo-jpeg/')).flatMap((p) => [640, 828, 1080, 1200, 1920].map((w) => ({ p, w, path: imagePath(p, w) })))
  const group = PodCgroup.create(1024 * MiB, 1)
  // In-process sharp with Next's transform, one at a time, in the same 1-CPU cgroup.
  const script = `
    const { readFileSync } = await import('node:fs')
    const { optimizeImage } = await import(${JSON.stringify(join(ROOT, 'dist/sidecar/image/transform.js'))})
    const { resolveNextConfig } = await import(${JSON.stringify(join(ROOT, 'dist/sidecar/next/images-config.js'))})
    const config = resolveNextConfig({}).sharp
    const inputs = ${JSON.stringify(cold.map(({ p, w }) => ({ file: join(CORPUS, p), w })))}.map((i) => ({ buffer: readFileSync(i.file), w: i.w }))
    const started = performance.now()
    for (const { buffer, w } of inputs) await optimizeImage(buffer, 'image/webp', w, 75, config)
    console.log(inputs.length / ((performance.now() - started) / 1000))`
  const ceiling = group.spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  ceiling.stdout.on('data', (c) => (out += c))
  await new Promise((r) => ceiling.once('exit', r))
  results.M3.inProcessSharpRps = Number(out.trim())
  for (const [name, args, allocatorEnv] of [
    ['sidecar', [], {}],
    ['sidecarNoMemoryAdmission', ['--memory-limit', '64Gi'], {}],
    ['sidecarGlibc', [], { NIS_ALLOCATOR: 'glibc', MALLOC_ARENA_MAX: '2' }],
  ]) {
    const sidecar = await startSidecarIn(group, frontend.url, args, allocatorEnv)
    const counts = await burst(sidecar.url, cold.map((c) => c.path), 8)
    results.M3[name] = { rps: counts[200] / counts.seconds, ...counts }
    await sidecar.stop()
  }
  // BENCH_BASELINE_CLI=path/to/an/older/dist/sidecar/cli/main.js: the same load on another build (as its Dockerfile ran it).
  if (process.env.BENCH_BASELINE_CLI) {
    const sidecar = await startSidecarIn(group, frontend.url, [], { MALLOC_ARENA_MAX: '2' }, process.execPath, [process.env.BENCH_BASELINE_CLI])
    const counts = await burst(sidecar.url, cold.map((c) => c.path), 8)
    results.M3.baseline = { cli: process.env.BENCH_BASELINE_CLI, rps: counts[200] / counts.seconds, ...counts }
    await sidecar.stop()
  }
  await group.remove()
}
// ---------------------------------------------------------------- M4: the burst served, 256 / 384 / 512 MiB
for (const mib of SECTIONS.includes('M4') ? BURST_SIZES : []) {
  log(`M4 burst served: the sidecar's command in ${mib} MiB / 1 CPU`)
  const group = PodCgroup.create(mib * MiB, 1)
  try {
    const sidecar = await startSidecarIn(group, frontend.url)
    await sleep(2000)
    const idle = groupRss(group)
    const points = []
    const stopSampling = sampler(group, points)
    const counts = await burst(sidecar.url, m4Set, 32)
    await sleep(AFTER_SECONDS * 1000)
    stopSampling()
    const survived = group.oomKills === 0 && !sidecar.exited()
    results.M4[mib] = { survived, oomKills: group.oomKills, ...counts, variants: m4Set.length, idleMiB: idle / MiB, peakMiB: Math.max(...points.map((p) => p[1])), after20sMiB: survived ? groupRss(group) / MiB : undefined }
    await sidecar.stop()
  } finally {
    await group.remove()
  }
}
frontend.stop()

// ---------------------------------------------------------------- report
mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
if (SECTIONS.includes('M1')) writeFileSync(join(ROOT, 'bench/results/memory-burst.svg'), lineChart({ title: `RSS during a burst of ${burstSet.length} large cold variants at c32, ${POD_MEMORY / MiB} MiB / 1 CPU`, xLabel: 'seconds', yLabel: 'RSS (MiB)', series: burstPlot, limit: { value: POD_MEMORY / MiB, label: 'limit' } }))
const { M1, M2, M3, M4 } = results
const MB = (v) => (v === undefined ? '–' : `${round(v, 0)} MiB`)
const row = (cells) => `| ${cells.join(' | ')} |`
const lines = [`Memory in a ${POD_MEMORY / MiB} MiB / 1-CPU cgroup (v1), ${new Date().toISOString()}`, '']
if (M1.next) lines.push(
  row(['M1 burst', 'Next built-in', 'sidecar']),
  row(['---', '---', '---']),
  row(['survived (no OOM kill)', M1.next.survived ? 'yes' : `**no** (${M1.next.oomKills} OOM kills)`, M1.sidecar.survived ? 'yes' : `**no** (${M1.sidecar.oomKills} OOM kills)`]),
  row(['200 / 503 + Retry-After / other / connection errors', `${M1.next[200]} / ${M1.next[503]} / ${M1.next.other} / ${M1.next.errors}`, `${M1.sidecar[200]} / ${M1.sidecar[503]} / ${M1.sidecar.other} / ${M1.sidecar.errors}`]),
  row(['RSS idle / peak / right after / 20 s after', `${MB(M1.next.idleMiB)} / ${MB(M1.next.peakMiB)} / ${MB(M1.next.afterBurstMiB)} / ${MB(M1.next.after20sMiB)}`, `${MB(M1.sidecar.idleMiB)} / ${MB(M1.sidecar.peakMiB)} / ${MB(M1.sidecar.afterBurstMiB)} / ${MB(M1.sidecar.after20sMiB)}`]),
  row(['RSS 20 s after ÷ idle', M1.next.after20sMiB ? `${round(M1.next.after20sMiB / M1.next.idleMiB, 2)}×` : '–', `${round(M1.sidecar.after20sMiB / M1.sidecar.idleMiB, 2)}×`]),
  '',
)
if (M2.peakMiB) lines.push(
  `M2 soak (${SOAK_MINUTES} min, 4 requests a second, one of them a new variant): ${M2.survived ? 'survived' : '**OOM-killed**'}; ${M2.new} new variants, ${M2.hits} revisits; 200 ${M2[200]}, 503 ${M2[503]}, errors ${M2.errors}; RSS peak ${MB(M2.peakMiB)}, after 1 min ${MB(M2.firstMinuteMiB)}, at the end ${MB(M2.lastMiB)}; trend after the first 2 minutes ${round(M2.trendMiBPerMinute, 2)} MiB/min, of the per-minute floor (10th percentile) **${round(M2.floorTrendMiBPerMinute, 2)} MiB/min**; floor by minute: ${M2.perMinute.map((m) => round(m.p10, 0)).join(', ')} MiB.`,
  '',
)
if (M3.sidecar) lines.push(
  `M3 cold throughput at 1 CPU (${M3.sidecar[200] + M3.sidecar[503]} photo variants, c8): sidecar ${round(M3.sidecar.rps, 2)} req/s = **${round(M3.sidecar.rps / M3.inProcessSharpRps, 2)}×** in-process sharp on one core (${round(M3.inProcessSharpRps, 2)} req/s); without memory admission ${round(M3.sidecarNoMemoryAdmission.rps, 2)} req/s (admission costs ${round((1 - M3.sidecar.rps / M3.sidecarNoMemoryAdmission.rps) * 100, 0)}%); on glibc with MALLOC_ARENA_MAX=2 instead of jemalloc ${round(M3.sidecarGlibc.rps, 2)} req/s (${round(M3.sidecarGlibc.rps / M3.inProcessSharpRps, 2)}×)${M3.baseline ? `; the baseline build ${round(M3.baseline.rps, 2)} req/s (this build ${round(M3.sidecar.rps / M3.baseline.rps, 2)}× it)` : ''}.`,
)
if (Object.keys(M4).length > 0) lines.push(
  '',
  row(['M4 burst: 44 distinct large cold variants at c32, the package\'s command', ...Object.keys(M4).map((mib) => `${mib} MiB / 1 CPU`)]),
  row(['---', ...Object.keys(M4).map(() => '---')]),
  row(['served (200)', ...Object.values(M4).map((m) => `**${m[200]} of ${m.variants}** (${round((m[200] / m.variants) * 100, 0)}%)`)]),
  row(['503 + Retry-After / other / connection errors', ...Object.values(M4).map((m) => `${m[503]} / ${m.other} / ${m.errors}`)]),
  row(['OOM kills', ...Object.values(M4).map((m) => String(m.oomKills))]),
  row(['burst took', ...Object.values(M4).map((m) => `${round(m.seconds, 1)} s`)]),
  row(['RSS idle / peak / 20 s after', ...Object.values(M4).map((m) => `${MB(m.idleMiB)} / ${MB(m.peakMiB)} / ${MB(m.after20sMiB)}`)]),
  row(['RSS 20 s after ÷ idle', ...Object.values(M4).map((m) => (m.after20sMiB ? `${round(m.after20sMiB / m.idleMiB, 2)}×` : '–'))]),
)
const markdown = lines.join('\n')
// A run of some sections only (BENCH_SECTIONS) writes memory-<sections>.{json,md}, leaving the full run's.
const out = SECTIONS.join(',') === 'M1,M2,M3,M4' ? 'memory' : `memory-${SECTIONS.join('-').toLowerCase()}`
writeFileSync(join(ROOT, `bench/results/${out}.json`), JSON.stringify(results, null, 2))
writeFileSync(join(ROOT, `bench/results/${out}.md`), `${markdown}\n`)
console.log(markdown)
