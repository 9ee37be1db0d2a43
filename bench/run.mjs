#!/usr/bin/env node
// `npm run bench`: every scenario against the sidecar and against Next's built-in optimizer
// (`next start` of the example app, default loader), side by side in one run on this machine.
// Also P: cold and warm on one pinned core (taskset -c 1; load and frontend on core 0), rounds
// interleaved, for Next, the sidecar's command with its shipped allocator and with glibc, unjs/ipx 3
// and in-process sharp. BENCH_SECTIONS=P runs only P (writes bench/results/pinned.{json,md}).
// Prints a markdown table and writes bench/results/latest.{json,md}. Loads only 127.0.0.1.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import express from 'express'
import sharp from 'sharp'
import { freePort, get, metricValue, rssOfTree, runList, runRate, runWrk, sampleRss, startServer, summarize } from './lib.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const APP = join(ROOT, 'example-next-app')
const CORPUS = join(ROOT, '../shared/corpus')
const NEXT_BIN = join(ROOT, 'node_modules/next/dist/bin/next')
const CLI = join(ROOT, 'dist/sidecar/cli/main.js')
const DIST = '.next-bench'
const CORES = availableParallelism()
const ACCEPT = 'image/webp'
const SSR_RATE = Number(process.env.BENCH_SSR_RATE ?? 20)
const PHASE_SECONDS = Number(process.env.BENCH_PHASE_SECONDS ?? 8)
const WARM_SECONDS = Number(process.env.BENCH_WARM_SECONDS ?? 6)
const S6_ROUNDS = Number(process.env.BENCH_S6_ROUNDS ?? 5)
const PIN_ROUNDS = Number(process.env.BENCH_PIN_ROUNDS ?? 2)
const ONLY_PINNED = process.env.BENCH_SECTIONS === 'P'
// P measures BENCH_TARGET_ROOT's build (its bin/ and dist/) when set, e.g. a `git archive` snapshot.
const TARGET = process.env.BENCH_TARGET_ROOT ?? ROOT
const BIN = join(TARGET, 'bin/next-image-sidecar')
const targetDist = (...candidates) => candidates.map((c) => join(TARGET, 'dist/sidecar', c)).find((f) => existsSync(f)) ?? join(TARGET, 'dist/sidecar', candidates[0])
const env = { NEXT_TELEMETRY_DISABLED: '1', EXAMPLE_DIST_DIR: DIST, NODE_ENV: 'production' }
const log = (...args) => console.error('[bench]', ...args)
const round = (n, digits = 1) => (Number.isFinite(n) ? Number(n.toFixed(digits)) : n)

// ---------------------------------------------------------------- setup
const photos = [
  ...readdir('photo-jpeg').map((f) => `photo-jpeg/${f}`),
  'large/elephants-3840x2160.jpg',
]
function readdir(dir) {
  return execFileSync('ls', [join(CORPUS, dir)], { encoding: 'utf8' }).trim().split('\n')
}
mkdirSync(join(APP, 'public/bench'), { recursive: true })
for (const p of photos) cpSync(join(CORPUS, p), join(APP, 'public/bench', p.replace('/', '-')))
const src = (p) => `/bench/${p.replace('/', '-')}`
const COLD_WIDTHS = [640, 828, 1080, 1200, 1920]
const coldSet = photos.flatMap((p) => COLD_WIDTHS.map((w) => ({ file: p, path: `/_next/image?url=${encodeURIComponent(src(p))}&w=${w}&q=75`, width: w })))
const stormSet = (q) => photos.flatMap((p) => [640, 750, 828, 1080, 1200, 1920, 2048].map((w) => `/_next/image?url=${encodeURIComponent(src(p))}&w=${w}&q=${q}`))

log('building the example app (default loader) ...')
execFileSync('npm', ['run', 'build'], { cwd: APP, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] })

async function startNext(cpus) {
  rmSync(join(APP, DIST, 'cache/images'), { recursive: true, force: true })
  const port = await freePort()
  return startServer({ name: 'next', command: process.execPath, args: [NEXT_BIN, 'start', '-p', String(port), '-H', '127.0.0.1'], cwd: APP, env, cpus, url: `http://127.0.0.1:${port}` })
}

async function startSidecar(frontend, cpus, cache = join(mkdtempSync(join(tmpdir(), 'nis-bench-')), 'cache.sqlite'), extraArgs = []) {
  const port = await freePort()
  const server = await startServer({
    name: 'sidecar',
    command: process.execPath,
    args: [CLI, '--port', String(port), '--host', '127.0.0.1', '--frontend', frontend, '--config', join(APP, 'next.config.mjs'), '--cache', `sqlite://${cache}`, '--max-attempts', '1', ...extraArgs],
    cwd: ROOT,
    env: { LOG_LEVEL: 'warn', ...(cpus ? { CONCURRENCY: '1' } : {}) },
    cpus,
    url: `http://127.0.0.1:${port}`,
    // /readyz opens the cache store, so no scenario times the SQLite open.
    readyPath: '/readyz',
  })
  return { ...server, cache }
}

const results = { machine: {}, settings: {}, scenarios: {} }
results.machine = {
  cpu: cpus()[0]?.model,
  cores: CORES,
  memoryGiB: round(totalmem() / 1024 ** 3),
  node: process.version,
  next: JSON.parse(readFileSync(join(ROOT, 'node_modules/next/package.json'), 'utf8')).version,
  sharp: sharp.versions.sharp,
  libvips: sharp.versions.vips,
  date: new Date().toISOString(),
}
results.settings = { coldRequests: coldSet.length, coldConcurrency: 8, warmConnections: [16, 64], warmSeconds: WARM_SECONDS, ssrRate: SSR_RATE, phaseSeconds: PHASE_SECONDS, accept: ACCEPT, cache: 'sqlite (default)' }

// ---------------------------------------------------------------- S0: the CPU ceiling
if (!ONLY_PINNED) {
  log('S0: in-process sharp, Next’s exact transform')
  const { optimizeImage } = await import(join(ROOT, 'dist/sidecar/image/transform.js'))
  const { resolveNextConfig } = await import(join(ROOT, 'dist/sidecar/next/images-config.js'))
  const sharpConfig = resolveNextConfig({}).sharp
  const inputs = coldSet.map((c) => ({ buffer: readFileSync(join(CORPUS, c.file)), width: c.width }))
  const s0 = {}
  for (const concurrency of [1, CORES]) {
    let next = 0
    const started = performance.now()
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < inputs.length) {
          const { buffer, width } = inputs[next++]
          await optimizeImage(buffer, 'image/webp', width, 75, sharpConfig)
        }
      }),
    )
    s0[`c${concurrency}`] = { rps: inputs.length / ((performance.now() - started) / 1000) }
  }
  results.scenarios.S0 = s0
}

// ---------------------------------------------------------------- P: one pinned core
{
  // This process (load) and the frontend on core 0, the server under test on core 1, each round
  // in the same order with fresh caches, so a neighbour's load on a shared machine falls on all.
  execFileSync('taskset', ['-apc', '0', String(process.pid)], { stdio: 'ignore' })
  const frontend = await startNext('0')
  const P = { rounds: PIN_ROUNDS, cold: { sharp: [], next: [], sidecar: [], sidecarGlibc: [], ipx: [] }, warm: { next: [], sidecar: [], ipx: [] } }
  const ipxPath = (c) => `/w_${c.width},f_webp,q_75${src(c.file)}`
  const sharpScript = `
    const { readFileSync } = await import('node:fs')
    const { optimizeImage } = await import(${JSON.stringify(targetDist('image/transform.js', 'transform.js'))})
    const { resolveNextConfig } = await import(${JSON.stringify(targetDist('next/images-config.js', 'images-config.js'))})
    const config = resolveNextConfig({}).sharp
    const inputs = ${JSON.stringify(coldSet.map((c) => ({ file: join(CORPUS, c.file), width: c.width })))}.map((i) => ({ buffer: readFileSync(i.file), width: i.width }))
    const started = performance.now()
    for (const { buffer, width } of inputs) await optimizeImage(buffer, 'image/webp', width, 75, config)
    console.log(inputs.length / ((performance.now() - started) / 1000))`
  const starters = {
    next: () => startNext('1'),
    // The package's command as shipped (its allocator), and with glibc's malloc as it is.
    sidecar: () => startPinnedCommand(frontend.url, {}),
    sidecarGlibc: () => startPinnedCommand(frontend.url, { NIS_ALLOCATOR: 'glibc' }),
    ipx: async () => {
      const port = await freePort()
      return startServer({ name: 'ipx', command: process.execPath, args: [join(ROOT, 'bench/ipx-server.mjs'), join(APP, 'public'), String(port)], cwd: ROOT, env: {}, cpus: '1', url: `http://127.0.0.1:${port}`, readyPath: ipxPath({ file: photos[0], width: 16 }) })
    },
  }
  for (let r = 0; r < PIN_ROUNDS; r++) {
    log(`P one pinned core, round ${r + 1} of ${PIN_ROUNDS}: in-process sharp`)
    P.cold.sharp.push({ rps: Number(execFileSync('taskset', ['-c', '1', process.execPath, '--input-type=module', '-e', sharpScript], { encoding: 'utf8', timeout: 300_000 }).trim()) })
    for (const name of ['next', 'sidecar', 'sidecarGlibc', 'ipx']) {
      log(`P one pinned core, round ${r + 1} of ${PIN_ROUNDS}: ${name}`)
      const server = await starters[name]()
      const paths = coldSet.map((c) => (name === 'ipx' ? ipxPath(c) : c.path))
      const { latencies, ...cold } = await runList(paths.map((p) => `${server.url}${p}`), 8, { accept: ACCEPT })
      P.cold[name].push(cold)
      // Warm: the same URLs again (ipx has no result cache: it transforms every time).
      if (name !== 'sidecarGlibc') P.warm[name].push(await runWrk(server.url, paths, 16, WARM_SECONDS, ACCEPT, { timeoutSeconds: 60, cpus: '0' }))
      await server.stop()
    }
  }
  await frontend.stop()
  execFileSync('taskset', ['-apc', `0-${CORES - 1}`, String(process.pid)], { stdio: 'ignore' })
  const median = (xs) => {
    const sorted = xs.filter(Number.isFinite).sort((a, b) => a - b)
    return sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2
  }
  P.median = Object.fromEntries(Object.entries({ ...P.cold }).map(([k, v]) => [k, { cold: median(v.map((x) => x.rps)), coldMin: Math.min(...v.map((x) => x.rps)), coldMax: Math.max(...v.map((x) => x.rps)), failed: v.reduce((n, x) => n + (x.failed ?? 0), 0), warm: P.warm[k] ? median(P.warm[k].map((x) => x.rps)) : undefined, warmMin: P.warm[k] ? Math.min(...P.warm[k].map((x) => x.rps)) : undefined, warmMax: P.warm[k] ? Math.max(...P.warm[k].map((x) => x.rps)) : undefined }]))
  results.scenarios.P = P
  if (ONLY_PINNED) {
    const markdown = pinnedTable(P).join('\n')
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
    writeFileSync(join(ROOT, 'bench/results/pinned.json'), JSON.stringify({ machine: results.machine, settings: results.settings, P }, null, 2))
    writeFileSync(join(ROOT, 'bench/results/pinned.md'), `${markdown}\n`)
    console.log(markdown)
    process.exit(0)
  }
}

/** The package's command (bin/next-image-sidecar) on core 1, with `allocatorEnv` added to a clean allocator environment. */
async function startPinnedCommand(frontend, allocatorEnv) {
  const port = await freePort()
  const cache = join(mkdtempSync(join(tmpdir(), 'nis-bench-')), 'cache.sqlite')
  return startServer({
    name: 'sidecar',
    command: BIN,
    args: ['--port', String(port), '--host', '127.0.0.1', '--frontend', frontend, '--config', join(APP, 'next.config.mjs'), '--cache', `sqlite://${cache}`, '--max-attempts', '1'],
    cwd: ROOT,
    env: { LOG_LEVEL: 'warn', LD_PRELOAD: '', MALLOC_CONF: '', NIS_ALLOCATOR: '', ...allocatorEnv },
    cpus: '1',
    url: `http://127.0.0.1:${port}`,
    readyPath: '/readyz',
  })
}

/** P's rows: cold and warm req/s on one pinned core, medians (min–max), and the ratios. */
function pinnedTable(P) {
  const m = P.median
  const f = (x, digits = 2) => round(x, digits)
  const cell = (k, kind, digits) => (m[k][kind] === undefined ? '' : `${f(m[k][kind], digits)} (${f(m[k][`${kind}Min`], digits)}–${f(m[k][`${kind}Max`], digits)})`)
  return [
    `P: one pinned core (taskset -c 1; load and Next frontend on core 0), ${coldSet.length} cold variants at c8 then warm (the same URLs, wrk c16 ${WARM_SECONDS} s), ${P.rounds} interleaved rounds, medians (min–max); a machine shared with other engineers' runs.`,
    '',
    '| one pinned core | Next built-in | sidecar (shipped allocator) | sidecar, glibc malloc | ipx 3 | in-process sharp |',
    '| --- | --- | --- | --- | --- | --- |',
    `| cold req/s | ${cell('next', 'cold')} | ${cell('sidecar', 'cold')} | ${cell('sidecarGlibc', 'cold')} | ${cell('ipx', 'cold')} | ${cell('sharp', 'cold')} |`,
    `| cold ÷ in-process sharp | ${f(m.next.cold / m.sharp.cold)}× | ${f(m.sidecar.cold / m.sharp.cold)}× | ${f(m.sidecarGlibc.cold / m.sharp.cold)}× | ${f(m.ipx.cold / m.sharp.cold)}× | 1× |`,
    `| warm req/s (c16) | ${cell('next', 'warm', 0)} | ${cell('sidecar', 'warm', 0)} |  | ${cell('ipx', 'warm', 1)} |  |`,
    `| non-200 answers | ${m.next.failed} | ${m.sidecar.failed} | ${m.sidecarGlibc.failed} | ${m.ipx.failed} |  |`,
  ]
}

// ---------------------------------------------------------------- S1, S2, S3, S5 (unpinned)
{
  const next = await startNext()
  const sidecar = await startSidecar(next.url)
  const S1 = {}
  const S2 = {}
  const S5 = {}
  await sleep(1000)
  const idle = { next: rssOfTree(next.pid), sidecar: rssOfTree(sidecar.pid) }

  for (const target of [next, sidecar]) {
    log(`S1 cold: ${target.name}`)
    const stop = sampleRss(target.pid)
    S1[target.name] = await runList(coldSet.map((c) => `${target.url}${c.path}`), 8, { accept: ACCEPT })
    S5[target.name] = { idle: idle[target.name], peakS1: stop() }
  }

  // The static ceiling: the sidecar's own output bytes, from a plain static file server.
  const staticDir = mkdtempSync(join(tmpdir(), 'nis-bench-static-'))
  for (const [i, c] of coldSet.entries()) {
    const res = await fetch(`${sidecar.url}${c.path}`, { headers: { accept: ACCEPT } })
    writeFileSync(join(staticDir, `${i}.webp`), Buffer.from(await res.arrayBuffer()))
  }
  const staticPort = await freePort()
  const staticApp = express()
  staticApp.use(express.static(staticDir))
  const staticServer = staticApp.listen(staticPort, '127.0.0.1')
  const staticUrl = `http://127.0.0.1:${staticPort}`

  // The same sidecar as a cluster (`--workers <cores>`) on the same, already filled, SQLite file:
  // cached images served on every core. Two passes fill each worker's hot tier.
  const workers = await startSidecar(next.url, undefined, sidecar.cache, ['--workers', String(CORES)])
  await sleep(1000)
  S5.workers = { idle: rssOfTree(workers.pid) }
  for (let pass = 0; pass < 2; pass++) await runList(coldSet.map((c) => `${workers.url}${c.path}`), 8, { accept: ACCEPT })

  for (const connections of [16, 64]) {
    for (const [name, origin, paths] of [
      ['next', next.url, coldSet.map((c) => c.path)],
      ['sidecar', sidecar.url, coldSet.map((c) => c.path)],
      ['static', staticUrl, coldSet.map((_, i) => `/${i}.webp`)],
      ['workers', workers.url, coldSet.map((c) => c.path)],
    ]) {
      log(`S2 warm c${connections}: ${name}`)
      const pid = { next: next.pid, sidecar: sidecar.pid, workers: workers.pid }[name]
      const stop = pid ? sampleRss(pid) : undefined
      S2[`${name}-c${connections}`] = await runWrk(origin, paths, connections, WARM_SECONDS, ACCEPT)
      if (stop) S5[name].peakS2 = Math.max(S5[name].peakS2 ?? 0, stop())
    }
  }
  staticServer.close()
  await sleep(5000)
  for (const target of [next, sidecar]) S5[target.name].after = rssOfTree(target.pid)
  S5.workers.after = rssOfTree(workers.pid)
  await workers.stop()

  log('S3 herd')
  const S3 = {}
  const herdPath = `/_next/image?url=${encodeURIComponent(src('large/elephants-3840x2160.jpg'))}&w=3840&q=90`
  for (const target of [next, sidecar]) {
    const before = target.name === 'sidecar' ? await metricValue(sidecar.url, 'next_image_sidecar_transforms_total') : undefined
    const started = performance.now()
    const responses = await Promise.all(Array.from({ length: 64 }, () => get(`${target.url}${herdPath}`, { accept: ACCEPT })))
    S3[target.name] = {
      wallMs: performance.now() - started,
      failed: responses.filter((r) => r.status !== 200).length,
      transforms: before === undefined ? undefined : (await metricValue(sidecar.url, 'next_image_sidecar_transforms_total')) - before,
    }
  }
  Object.assign(results.scenarios, { S1, S2, S3, S5 })
  await sidecar.stop()

  // S6: a gallery page's first view, cold vs after `next-image-sidecar warm`.
  log('S6 first view: cold vs warmed')
  const { imagesInHtml } = await import(join(ROOT, 'dist/sidecar/cli/warm-sources.js'))
  const html = await (await fetch(`${next.url}/gallery`)).text()
  // What a 1280-px, DPR-1 browser fetches for the 33vw grid: the 640w candidate of each image.
  const firstView = [...new Set(imagesInHtml(html, `${next.url}/gallery`, '').filter((r) => r.w === '640').map((r) => `/_next/image?url=${encodeURIComponent(r.url)}&w=${r.w}&q=${r.q}`))]
  // Each first view is a fresh sidecar process (a new release): on an empty cache, then on the
  // cache `warm` filled. Twelve requests make a noisy p95, so the views are repeated and pooled.
  const S6 = { images: firstView.length, rounds: S6_ROUNDS }
  const warmedCache = join(mkdtempSync(join(tmpdir(), 'nis-bench-warm-')), 'cache.sqlite')
  const started = performance.now()
  execFileSync(process.execPath, [CLI, 'warm', '--pages', `${next.url}/gallery`, '--frontend', next.url, '--config', join(APP, 'next.config.mjs'), '--cache', `sqlite://${warmedCache}`], { cwd: ROOT, env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'ignore'] })
  S6.warmSeconds = (performance.now() - started) / 1000
  const views = { cold: [], warmed: [] }
  for (let round = 0; round < S6_ROUNDS; round++) {
    for (const kind of ['cold', 'warmed']) {
      const sidecar = kind === 'cold' ? await startSidecar(next.url) : await startSidecar(next.url, undefined, warmedCache)
      views[kind].push(await runList(firstView.map((p) => `${sidecar.url}${p}`), 6, { accept: ACCEPT }))
      await sidecar.stop()
    }
  }
  for (const kind of ['cold', 'warmed']) {
    const latencies = views[kind].flatMap((v) => v.latencies)
    S6[kind] = { ...summarize(latencies, views[kind].reduce((t, v) => t + v.seconds, 0)), failed: views[kind].reduce((n, v) => n + v.failed, 0) }
  }
  results.scenarios.S6 = S6
  await next.stop()
}

// ---------------------------------------------------------------- S4: isolation (pinned)
{
  const S4 = {}
  const next = await startNext('0')
  const sidecar = await startSidecar(next.url, '1')
  const page = `${next.url}/`
  await runRate(page, SSR_RATE, 2) // warm the route
  const storm = async (origin, urls) => {
    let stop = false
    let i = 0
    const workers = Array.from({ length: 8 }, async () => {
      while (!stop) await get(`${origin}${urls[i++ % urls.length]}`, { accept: ACCEPT })
    })
    return async () => {
      stop = true
      await Promise.all(workers)
    }
  }
  for (const [mode, origin, q] of [
    ['next', next.url, 50],
    ['sidecar', sidecar.url, 90],
  ]) {
    log(`S4 isolation: storm to ${mode}`)
    const idle = await runRate(page, SSR_RATE, PHASE_SECONDS)
    const end = await storm(origin, stormSet(q))
    await sleep(500)
    const during = await runRate(page, SSR_RATE, PHASE_SECONDS)
    await end()
    S4[mode] = { idle, storm: during }
  }
  results.scenarios.S4 = S4
  await sidecar.stop()
  await next.stop()
}

// ---------------------------------------------------------------- report
const s = results.scenarios
const ratios = {
  coldVsCeiling: s.S1.sidecar.rps / s.S0[`c${CORES}`].rps,
  nextColdVsCeiling: s.S1.next.rps / s.S0[`c${CORES}`].rps,
  warmVsNext16: s.S2['sidecar-c16'].rps / s.S2['next-c16'].rps,
  warmVsNext64: s.S2['sidecar-c64'].rps / s.S2['next-c64'].rps,
  warmVsStatic16: s.S2['sidecar-c16'].rps / s.S2['static-c16'].rps,
  warmVsStatic64: s.S2['sidecar-c64'].rps / s.S2['static-c64'].rps,
  warmWorkersVsNext16: s.S2['workers-c16'].rps / s.S2['next-c16'].rps,
  warmWorkersVsNext64: s.S2['workers-c64'].rps / s.S2['next-c64'].rps,
  herdTransforms: s.S3.sidecar.transforms,
  isolationSidecar: s.S4.sidecar.storm.p95 / s.S4.sidecar.idle.p95,
  isolationNext: s.S4.next.storm.p95 / s.S4.next.idle.p95,
  stormP95Reduction: 1 - s.S4.sidecar.storm.p95 / s.S4.next.storm.p95,
  peakRssS1VsNext: s.S5.sidecar.peakS1 / s.S5.next.peakS1,
  rssAfterVsIdle: s.S5.sidecar.after / s.S5.sidecar.idle,
  firstViewP95ColdVsWarm: s.S6.cold.p95 / s.S6.warmed.p95,
  pinnedColdVsSharp: s.P.median.sidecar.cold / s.P.median.sharp.cold,
  pinnedColdVsIpx: s.P.median.sidecar.cold / s.P.median.ipx.cold,
  pinnedColdVsGlibc: s.P.median.sidecar.cold / s.P.median.sidecarGlibc.cold,
}
results.ratios = ratios
const targets = [
  ['cold throughput ≥ 0.9× the S0 ceiling', ratios.coldVsCeiling >= 0.9, `${round(ratios.coldVsCeiling, 2)}×`],
  ['warm ≥ 3× Next (c16 / c64), one process', ratios.warmVsNext16 >= 3 && ratios.warmVsNext64 >= 3, `${round(ratios.warmVsNext16, 2)}× / ${round(ratios.warmVsNext64, 2)}×`],
  [`warm ≥ 3× Next (c16 / c64), --workers ${CORES}`, ratios.warmWorkersVsNext16 >= 3 && ratios.warmWorkersVsNext64 >= 3, `${round(ratios.warmWorkersVsNext16, 2)}× / ${round(ratios.warmWorkersVsNext64, 2)}×`],
  ['warm ≥ 0.5× static (c16 / c64)', ratios.warmVsStatic16 >= 0.5 && ratios.warmVsStatic64 >= 0.5, `${round(ratios.warmVsStatic16, 2)}× / ${round(ratios.warmVsStatic64, 2)}×`],
  ['herd: exactly one transform', ratios.herdTransforms === 1, String(ratios.herdTransforms)],
  ['SSR p95 during storm ≤ 1.25× idle (sidecar)', ratios.isolationSidecar <= 1.25, `${round(ratios.isolationSidecar, 2)}×`],
  ['SSR p95 during storm ≥ 40% lower than Next self-optimizing', ratios.stormP95Reduction >= 0.4, `${round(ratios.stormP95Reduction * 100, 0)}% lower`],
  ['peak RSS during S1 ≤ Next’s', ratios.peakRssS1VsNext <= 1, `${round(ratios.peakRssS1VsNext, 2)}×`],
  ['RSS after within 20% of idle', ratios.rssAfterVsIdle <= 1.2, `${round(ratios.rssAfterVsIdle, 2)}×`],
  ['first-view p95 ≥ 10× lower after warm', ratios.firstViewP95ColdVsWarm >= 10, `${round(ratios.firstViewP95ColdVsWarm, 1)}× lower`],
  ['cold on one pinned core ≥ 0.95× in-process sharp (shipped allocator)', ratios.pinnedColdVsSharp >= 0.95, `${round(ratios.pinnedColdVsSharp, 2)}× (glibc malloc: ${round(s.P.median.sidecarGlibc.cold / s.P.median.sharp.cold, 2)}×)`],
  ['cold on one pinned core ≥ ipx 3', ratios.pinnedColdVsIpx >= 1, `${round(ratios.pinnedColdVsIpx, 2)}×`],
]
results.targets = targets.map(([name, met, value]) => ({ name, met, value }))

const MB = (b) => `${round(b / 1024 ** 2, 0)} MB`
const row = (cells) => `| ${cells.join(' | ')} |`
const lines = [
  `Machine: ${results.machine.cpu}, ${CORES} cores, ${results.machine.memoryGiB} GiB; Node ${results.machine.node}, next ${results.machine.next}, sharp ${results.machine.sharp} (libvips ${results.machine.libvips}); ${results.machine.date}`,
  '',
  row(['scenario', 'Next built-in', 'sidecar', 'reference']),
  row(['---', '---', '---', '---']),
  row(['S0 ceiling: in-process sharp, req/s (c1 / c' + CORES + ')', '', '', `${round(s.S0.c1.rps)} / ${round(s.S0[`c${CORES}`].rps)}`]),
  row([`S1 cold (${coldSet.length} unique, c8): req/s`, round(s.S1.next.rps), round(s.S1.sidecar.rps), `ceiling ${round(s.S0[`c${CORES}`].rps)}`]),
  row(['S1 cold: p50 / p95 / p99 ms', `${round(s.S1.next.p50, 0)} / ${round(s.S1.next.p95, 0)} / ${round(s.S1.next.p99, 0)}`, `${round(s.S1.sidecar.p50, 0)} / ${round(s.S1.sidecar.p95, 0)} / ${round(s.S1.sidecar.p99, 0)}`, '']),
  ...[16, 64].map((c) =>
    row([`S2 warm c${c}: req/s (p50 / p99 ms)`, `${round(s.S2[`next-c${c}`].rps, 0)} (${round(s.S2[`next-c${c}`].p50)} / ${round(s.S2[`next-c${c}`].p99)})`, `${round(s.S2[`sidecar-c${c}`].rps, 0)} (${round(s.S2[`sidecar-c${c}`].p50)} / ${round(s.S2[`sidecar-c${c}`].p99)})`, `static ${round(s.S2[`static-c${c}`].rps, 0)} (${round(s.S2[`static-c${c}`].p50)} / ${round(s.S2[`static-c${c}`].p99)})`]),
  ),
  ...[16, 64].map((c) =>
    row([`S2 warm c${c}, sidecar --workers ${CORES}: req/s (p50 / p99 ms)`, '', `${round(s.S2[`workers-c${c}`].rps, 0)} (${round(s.S2[`workers-c${c}`].p50)} / ${round(s.S2[`workers-c${c}`].p99)})`, '']),
  ),
  row(['S3 herd (64 identical cold): wall ms, transforms', `${round(s.S3.next.wallMs, 0)}`, `${round(s.S3.sidecar.wallMs, 0)}, ${s.S3.sidecar.transforms}`, '']),
  row([`S4 SSR p50/p95/p99 ms idle (${SSR_RATE} req/s, frontend on core 0)`, `${round(s.S4.next.idle.p50)} / ${round(s.S4.next.idle.p95)} / ${round(s.S4.next.idle.p99)}`, `${round(s.S4.sidecar.idle.p50)} / ${round(s.S4.sidecar.idle.p95)} / ${round(s.S4.sidecar.idle.p99)}`, '']),
  row(['S4 SSR p50/p95/p99 ms during the image storm', `${round(s.S4.next.storm.p50)} / ${round(s.S4.next.storm.p95)} / ${round(s.S4.next.storm.p99)}`, `${round(s.S4.sidecar.storm.p50)} / ${round(s.S4.sidecar.storm.p95)} / ${round(s.S4.sidecar.storm.p99)}`, 'sidecar on core 1']),
  row([`S6 gallery first view (${s.S6.images} images, c6, ${s.S6.rounds} fresh processes each): p50 / p95 ms`, '', `cold ${round(s.S6.cold.p50, 0)} / ${round(s.S6.cold.p95, 0)}; after warm ${round(s.S6.warmed.p50, 1)} / ${round(s.S6.warmed.p95, 1)}`, `warm took ${round(s.S6.warmSeconds)} s`]),
  row(['S5 RSS: idle / peak S1 / peak S2 / after', `${MB(s.S5.next.idle)} / ${MB(s.S5.next.peakS1)} / ${MB(s.S5.next.peakS2)} / ${MB(s.S5.next.after)}`, `${MB(s.S5.sidecar.idle)} / ${MB(s.S5.sidecar.peakS1)} / ${MB(s.S5.sidecar.peakS2)} / ${MB(s.S5.sidecar.after)}`, `--workers ${CORES} (all processes): ${MB(s.S5.workers.idle)} idle / ${MB(s.S5.workers.peakS2)} peak S2 / ${MB(s.S5.workers.after)} after`]),
  '',
  ...pinnedTable(s.P),
  '',
  row(['target', 'met', 'measured']),
  row(['---', '---', '---']),
  ...targets.map(([name, met, value]) => row([name, met ? 'yes' : '**no**', value])),
]
const markdown = lines.join('\n')
mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
writeFileSync(join(ROOT, 'bench/results/latest.json'), JSON.stringify(results, (key, value) => (key === 'latencies' ? undefined : value), 2))
writeFileSync(join(ROOT, 'bench/results/latest.md'), `${markdown}\n`)
console.log(markdown)
