// `node --import tsx bench/allocators.mjs`: the memory allocator under the sidecar, side by side in
// one run, rounds interleaved (A B C … A B C …) so that a neighbour's load on a shared machine falls
// on every allocator alike. For each allocator (the real command, bin/next-image-sidecar, with only
// the environment changed):
//   pinned  cold throughput on one pinned core (taskset -c 1): distinct cold variants of the
//           corpus's large photos from a static frontend, concurrency 8 (and, as the reference,
//           in-process sharp with Next's transform on the same core, one at a time);
//   quota   the same load in a 1-CPU / 1 GiB cgroup (CFS quota, as limits.cpu: 1);
//   burst   44 distinct large cold variants at c32 in a 256 MiB / 1-CPU cgroup (as
//           test/http/burst.test.ts): share served, OOM kills, RSS idle / peak / 20 s after.
// The load generator and the frontend run in this process, pinned to core 0.
// BENCH_ROUNDS (2), BENCH_ALLOCATORS (comma-separated names, default all), BENCH_BURST_MIB (256).
// Writes bench/results/allocators.{md,json}. Needs root (cgroup v1) and Debian's libjemalloc2.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { burst, freePort, get } from './lib.mjs'
import { PodCgroup } from '../test/helpers/cgroup.ts'
import { startUpstream } from '../test/helpers/upstream-server.ts'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const CORPUS = join(ROOT, '../shared/corpus')
// BENCH_TARGET_ROOT: measure another checkout's build (its bin/ and dist/), e.g. a snapshot made
// with `git archive`, while this tree's dist/ is being rebuilt by others.
const TARGET = process.env.BENCH_TARGET_ROOT ?? ROOT
const BIN = join(TARGET, 'bin/next-image-sidecar')
const distFile = (...candidates) => candidates.map((c) => join(TARGET, 'dist/sidecar', c)).find((f) => existsSync(f)) ?? join(TARGET, 'dist/sidecar', candidates[0])
const MiB = 1024 ** 2
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const BURST_MIB = Number(process.env.BENCH_BURST_MIB ?? 256)
const AFTER_SECONDS = 20
const log = (...args) => console.error('[bench:allocators]', ...args)
const round = (n, digits = 1) => (Number.isFinite(n) ? Number(n.toFixed(digits)) : n)

const JEMALLOC = `/usr/lib/${execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim()}-linux-gnu/libjemalloc.so.2`
// name → environment of the command. The command preloads jemalloc unless LD_PRELOAD,
// MALLOC_ARENA_MAX or NIS_ALLOCATOR=glibc is set.
const ALLOCATORS = {
  'jemalloc (as shipped before)': { NIS_ALLOCATOR: '', MALLOC_CONF: '' },
  'jemalloc background_thread': { MALLOC_CONF: 'background_thread:true' },
  'jemalloc bg, dirty 1 s, muzzy 0': { MALLOC_CONF: 'background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0' },
  'jemalloc bg, dirty 5 s, muzzy 0, narenas 2': { MALLOC_CONF: 'background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0,narenas:2' },
  'jemalloc tcache:false': { MALLOC_CONF: 'tcache:false' },
  'glibc': { NIS_ALLOCATOR: 'glibc' },
  'glibc MALLOC_ARENA_MAX=2': { MALLOC_ARENA_MAX: '2' },
  'glibc arenas 2, mmap/trim threshold 128 KiB': { MALLOC_ARENA_MAX: '2', GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072' },
}
const chosen = process.env.BENCH_ALLOCATORS ? process.env.BENCH_ALLOCATORS.split(',') : Object.keys(ALLOCATORS)

// ---------------------------------------------------------------- setup
const CORES = availableParallelism()
// This process (client and frontend) on core 0; the sidecar on core 1.
execFileSync('taskset', ['-apc', '0', String(process.pid)], { stdio: 'ignore' })
const upstream = await startUpstream()
const imagePath = (file, w, q = 75) => `/_next/image?url=${encodeURIComponent(`/corpus/${file}`)}&w=${w}&q=${q}`
// Cold throughput: the corpus's photos of 2.4 MP and more, five widths each.
const COLD_FILES = ['large/elephants-3840x2160.jpg', ...['aqua', 'aqua-cmyk', 'garden', 'garden-progressive', 'ladybird', 'ladybird-exif-rotate-6', 'storm'].map((f) => `photo-jpeg/${f}.jpg`)]
const COLD_WIDTHS = [640, 828, 1080, 1200, 1920]
const coldSet = COLD_FILES.flatMap((f) => COLD_WIDTHS.map((w) => ({ file: f, w, path: imagePath(f, w) })))
// The burst of test/http/burst.test.ts.
const BURST_FILES = ['large/elephants-3840x2160.jpg', 'large/truchet-dark-4096.webp', 'large/float-into-mate.png', 'photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/aqua.jpg', 'photo-jpeg/aqua-cmyk.jpg', 'photo-jpeg/ladybird-exif-rotate-6.jpg', 'photo-jpeg/green-meadow.jpg', 'photo-jpeg/garden-progressive.jpg', 'photo-jpeg/rocket.jpg']
const burstSet = BURST_FILES.flatMap((f) => [640, 1080, 1920, 3840].map((w) => imagePath(f, w)))

/** Resident anonymous memory charged to the cgroup (what the OOM killer weighs), bytes. */
function groupRss(group) {
  return Number(/^total_rss (\d+)/m.exec(readFileSync(`/sys/fs/cgroup/memory/${group.name}/memory.stat`, 'utf8'))?.[1] ?? 0)
}

/** Spawns the command (in `group`, or pinned to core 1) with the allocator's environment; waits for /readyz. */
async function startSidecar(allocatorEnv, group) {
  const port = await freePort()
  const cache = join(mkdtempSync(join(tmpdir(), 'nis-bench-alloc-')), 'cache.sqlite')
  const url = `http://127.0.0.1:${port}`
  const args = ['--port', String(port), '--host', '127.0.0.1', '--frontend', upstream.url, '--cache', `sqlite://${cache}`]
  const environment = { ...process.env, LOG_LEVEL: 'warn', ...allocatorEnv }
  for (const key of ['LD_PRELOAD', 'MALLOC_ARENA_MAX', 'MALLOC_CONF', 'GLIBC_TUNABLES', 'NIS_ALLOCATOR']) if (!allocatorEnv[key]) delete environment[key]
  const { spawn } = await import('node:child_process')
  // In a cgroup: every core (this process's pinning to core 0 is not inherited), the quota limits it.
  const child = group ? group.spawn('taskset', ['-c', `0-${CORES - 1}`, BIN, ...args], { env: environment, stdio: ['ignore', 'ignore', 'inherit'] }) : spawn('taskset', ['-c', '1', BIN, ...args], { env: environment, stdio: ['ignore', 'ignore', 'inherit'] })
  let exit
  child.on('exit', (code, signal) => (exit = { code, signal }))
  for (let i = 0; ; i++) {
    if (exit) throw new Error(`the sidecar exited before it answered: ${JSON.stringify(exit)}`)
    try {
      const res = await fetch(`${url}/readyz`)
      await res.arrayBuffer()
      if (res.ok) break
    } catch {}
    if (i > 600) throw new Error('the sidecar did not start')
    await sleep(100)
  }
  const maps = readFileSync(`/proc/${child.pid}/maps`, 'utf8')
  return {
    url,
    pid: child.pid,
    jemalloc: maps.includes('libjemalloc'),
    exited: () => exit,
    async stop() {
      if (exit) return
      const done = new Promise((r) => child.once('exit', r))
      child.kill('SIGKILL')
      await done
    },
  }
}

/** In-process sharp, Next's transform, one image at a time, on core 1: the ceiling of one core. */
function inProcessSharp() {
  const script = `
    const { readFileSync } = await import('node:fs')
    const { optimizeImage } = await import(${JSON.stringify(distFile('image/transform.js', 'transform.js'))})
    const { resolveNextConfig } = await import(${JSON.stringify(distFile('next/images-config.js', 'images-config.js'))})
    const config = resolveNextConfig({}).sharp
    const inputs = ${JSON.stringify(coldSet.map(({ file, w }) => ({ file: join(CORPUS, file), w })))}.map((i) => ({ buffer: readFileSync(i.file), w: i.w }))
    const started = performance.now()
    for (const { buffer, w } of inputs) await optimizeImage(buffer, 'image/webp', w, 75, config)
    console.log(inputs.length / ((performance.now() - started) / 1000))`
  // glibc, as `node` runs it: the reference the issue compares against.
  return Number(execFileSync('taskset', ['-c', '1', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 300_000 }).trim())
}

const runs = Object.fromEntries(chosen.map((name) => [name, { pinned: [], quota: [], burst: [] }]))
runs['in-process sharp (glibc)'] = { pinned: [] }
const deadline = AbortSignal.timeout(60 * 60_000)
for (let r = 0; r < ROUNDS; r++) {
  log(`round ${r + 1} of ${ROUNDS}`)
  runs['in-process sharp (glibc)'].pinned.push({ rps: inProcessSharp() })
  for (const name of chosen) {
    if (deadline.aborted) throw new Error('the run took over an hour')
    const allocatorEnv = ALLOCATORS[name]
    log(`${name}: pinned`)
    {
      const sidecar = await startSidecar(allocatorEnv)
      runs[name].jemalloc = sidecar.jemalloc
      runs[name].pinned.push(await burst(sidecar.url, coldSet.map((c) => c.path), 8))
      await sidecar.stop()
    }
    log(`${name}: 1-CPU quota`)
    {
      const group = PodCgroup.create(1024 * MiB, 1)
      try {
        const sidecar = await startSidecar(allocatorEnv, group)
        runs[name].quota.push(await burst(sidecar.url, coldSet.map((c) => c.path), 8))
        await sidecar.stop()
      } finally {
        await group.remove()
      }
    }
    log(`${name}: burst in ${BURST_MIB} MiB / 1 CPU`)
    {
      const group = PodCgroup.create(BURST_MIB * MiB, 1)
      try {
        const sidecar = await startSidecar(allocatorEnv, group)
        await sleep(2000)
        const idle = groupRss(group)
        let peak = idle
        const timer = setInterval(() => (peak = Math.max(peak, groupRss(group))), 200)
        const counts = await burst(sidecar.url, burstSet, 32)
        const right = groupRss(group)
        await sleep(AFTER_SECONDS * 1000)
        clearInterval(timer)
        const survived = group.oomKills === 0 && !sidecar.exited()
        runs[name].burst.push({ ...counts, survived, oomKills: group.oomKills, idleMiB: idle / MiB, peakMiB: peak / MiB, rightAfterMiB: right / MiB, after20sMiB: survived ? groupRss(group) / MiB : undefined })
        await sidecar.stop()
      } finally {
        await group.remove()
      }
    }
  }
}
await upstream.close()

// ---------------------------------------------------------------- report
const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const spread = (xs, digits = 2) => `${round(Math.min(...xs), digits)}–${round(Math.max(...xs), digits)}`
const ceiling = median(runs['in-process sharp (glibc)'].pinned.map((x) => x.rps))
const glibc = runs.glibc ? median(runs.glibc.pinned.map((x) => x.rps)) : NaN
const glibcQuota = runs.glibc ? median(runs.glibc.quota.map((x) => x.rps)) : NaN
const summary = {}
for (const name of chosen) {
  const { pinned, quota, burst } = runs[name]
  summary[name] = {
    env: ALLOCATORS[name],
    jemallocLoaded: runs[name].jemalloc,
    pinnedRps: median(pinned.map((x) => x.rps)),
    pinnedSpread: spread(pinned.map((x) => x.rps)),
    pinnedVsSharp: median(pinned.map((x) => x.rps)) / ceiling,
    pinnedVsGlibc: median(pinned.map((x) => x.rps)) / glibc,
    quotaRps: median(quota.map((x) => x.rps)),
    quotaSpread: spread(quota.map((x) => x.rps)),
    quotaVsGlibc: median(quota.map((x) => x.rps)) / glibcQuota,
    served: burst.map((b) => b[200]),
    refused: burst.map((b) => b[503]),
    failed: burst.map((b) => b.other + b.errors),
    oomKills: burst.reduce((n, b) => n + b.oomKills, 0),
    idleMiB: median(burst.map((b) => b.idleMiB)),
    peakMiB: median(burst.map((b) => b.peakMiB)),
    after20sMiB: median(burst.map((b) => b.after20sMiB)),
    afterVsIdle: median(burst.map((b) => b.after20sMiB / b.idleMiB)),
    afterVsIdleSpread: spread(burst.map((b) => b.after20sMiB / b.idleMiB)),
  }
}
const row = (cells) => `| ${cells.join(' | ')} |`
const lines = [
  `Allocators, ${ROUNDS} interleaved rounds, medians (spread min–max); ${cpus()[0]?.model}, ${CORES} cores, shared with other engineers' test runs; Node ${process.version}; ${new Date().toISOString()}.`,
  `Cold: ${coldSet.length} distinct variants (${COLD_FILES.length} photos of 2.4–8.3 MP × ${COLD_WIDTHS.join('/')} px, WebP q75) at c8 from a static frontend on core 0. In-process sharp (Next's transform, one at a time, taskset -c 1): ${round(ceiling, 2)} req/s (${spread(runs['in-process sharp (glibc)'].pinned.map((x) => x.rps))}). Burst: ${burstSet.length} distinct large variants at c32 in ${BURST_MIB} MiB / 1 CPU.`,
  '',
  row(['allocator (environment of bin/next-image-sidecar)', 'cold, taskset -c 1: req/s', '÷ in-process sharp', '÷ glibc', 'cold, 1-CPU quota: req/s', '÷ glibc', `burst ${BURST_MIB} MiB: served of ${burstSet.length} (per round)`, 'RSS idle / peak / 20 s after', '20 s after ÷ idle']),
  row(['---', '---', '---', '---', '---', '---', '---', '---', '---']),
  ...chosen.map((name) => {
    const s = summary[name]
    const env = Object.entries(s.env).filter(([, v]) => v).map(([k, v]) => `${k}=${v}`).join(' ') || 'default'
    return row([`${name} (\`${env}\`)${s.jemallocLoaded ? '' : ', glibc'}`, `${round(s.pinnedRps, 2)} (${s.pinnedSpread})`, `${round(s.pinnedVsSharp, 2)}×`, `${round(s.pinnedVsGlibc, 2)}×`, `${round(s.quotaRps, 2)} (${s.quotaSpread})`, `${round(s.quotaVsGlibc, 2)}×`, `${s.served.join(', ')}${s.oomKills ? `, **${s.oomKills} OOM kills**` : ''}${s.failed.some((n) => n) ? `, failed ${s.failed.join(', ')}` : ''}`, `${round(s.idleMiB, 0)} / ${round(s.peakMiB, 0)} / ${round(s.after20sMiB, 0)} MiB`, `${round(s.afterVsIdle, 2)}× (${s.afterVsIdleSpread})`])
  }),
]
const markdown = lines.join('\n')
mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
writeFileSync(join(ROOT, 'bench/results/allocators.json'), JSON.stringify({ rounds: ROUNDS, jemalloc: JEMALLOC, ceiling, runs, summary }, null, 2))
writeFileSync(join(ROOT, 'bench/results/allocators.md'), `${markdown}\n`)
console.log(markdown)
