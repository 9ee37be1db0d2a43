// The embedded cache's two drivers side by side, in one run: the store (dist/, SqliteStore) on Node's
// built-in node:sqlite (the default) and on sqlite3 through @keyv/sqlite 4 (the previous driver, archived and
// no longer a dependency: installed on demand into a directory of its own, where its install script downloads or
// compiles its binary). Same schema, same SQL, same files: only the driver differs.
//   start-up: open a copy of a file of START_ROWS entries until the store answers (schema, clean-up, sweep);
//   hit:      get() of a stored 30 kB entry, one at a time and 32 at once (event-loop delay measured);
//   miss:     get() of an absent key, then set() of a new 30 kB entry (what a cache miss costs the store).
// Rounds interleave the drivers; medians with min–max. Run: npx tsc -p tsconfig.build.json && node bench/sqlite-driver.mjs
import { copyFileSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import { performance, monitorEventLoopDelay } from 'node:perf_hooks'
import { randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { pino } from 'pino'
import { SqliteStore } from '../dist/sidecar/cache/sqlite-store.js'

const ROUNDS = Number(process.env.ROUNDS ?? 3)
const START_ROWS = Number(process.env.START_ROWS ?? 20_000)
const HIT_ENTRIES = 500
const HITS = 5_000
const MISSES = 1_000
const CONCURRENT = 32
const log = pino({ level: 'silent' })
const limits = { maxSize: 1024 ** 3, maxEntrySize: 16 * 1024 ** 2 }
const OLD_DRIVER = process.env.OLD_DRIVER_DIR ?? join(tmpdir(), 'nis-bench-sqlite3-driver')
if (!existsSync(join(OLD_DRIVER, 'node_modules/@keyv/sqlite/package.json'))) {
  execFileSync('npm', ['install', '--prefix', OLD_DRIVER, '--no-audit', '--no-fund', 'sqlite3@5.1.7', '@keyv/sqlite@4.0.8'], { stdio: 'inherit' })
}
const { default: KeyvSqlite } = await import(pathToFileURL(createRequire(join(OLD_DRIVER, 'package.json')).resolve('@keyv/sqlite')).href)
const DRIVERS = {
  'node:sqlite': undefined,
  'sqlite3 (@keyv/sqlite 4)': (path, { table, busyTimeoutMs }) => new KeyvSqlite({ uri: `sqlite://${path}`, table, busyTimeout: busyTimeoutMs }),
}
const dir = mkdtempSync(join(tmpdir(), 'nis-bench-sqlite-'))
const entry = (bytes, i) => ({ buffer: bytes, contentType: 'image/webp', maxAge: 60, expireAt: Date.now() + 3_600_000, etag: `e${i}`, upstreamEtag: `u${i}`, variant: { href: `/img/${i}.jpg`, width: 640, quality: 75, mimeType: 'image/webp' } })
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const spread = (xs) => `${median(xs).toFixed(2)} (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})`

/** The start-up file: START_ROWS entries of 4 kB, written by the store (index, sources and total included). */
async function startFile() {
  const path = join(dir, 'start.sqlite')
  const store = new SqliteStore(path, limits, log)
  const bytes = randomBytes(4000)
  for (let i = 0; i < START_ROWS; i++) await store.set(`k${i}`, entry(bytes, i), 86_400_000)
  await store.close()
  return path
}

let copies = 0
async function startup(driver, file) {
  const path = join(dir, `copy-${copies++}`, 'cache.sqlite')
  mkdirSync(join(path, '..'))
  copyFileSync(file, path)
  const began = performance.now()
  const store = new SqliteStore(path, limits, log, undefined, driver)
  await store.ping()
  const ms = performance.now() - began
  await store.close()
  rmSync(join(path, '..'), { recursive: true, force: true })
  return ms
}

async function hitsAndMisses(driver) {
  const path = join(dir, `hits-${copies++}`, 'cache.sqlite')
  const store = new SqliteStore(path, limits, log, undefined, driver)
  const bytes = randomBytes(30_000)
  for (let i = 0; i < HIT_ENTRIES; i++) await store.set(`h${i}`, entry(bytes, i), 86_400_000)
  // One at a time: the latency of one hit.
  const one = []
  let began = performance.now()
  for (let i = 0; i < HITS; i++) {
    const t = performance.now()
    if (!(await store.get(`h${(i * 7919) % HIT_ENTRIES}`))) throw new Error('a hit missed')
    one.push(performance.now() - t)
  }
  const hitRate = HITS / ((performance.now() - began) / 1000)
  one.sort((a, b) => a - b)
  // CONCURRENT at once: throughput, and how long the event loop was held.
  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  began = performance.now()
  for (let i = 0; i < HITS; i += CONCURRENT) {
    await Promise.all(Array.from({ length: CONCURRENT }, (_, j) => store.get(`h${(i + j) % HIT_ENTRIES}`)))
    // A turn of the event loop between batches, as between requests (a synchronous driver's batch
    // would otherwise run as one stretch of microtasks, and the delay histogram see nothing).
    await new Promise((resolve) => setImmediate(resolve))
  }
  const concurrentRate = HITS / ((performance.now() - began) / 1000)
  delay.disable()
  // Misses: a lookup that finds nothing, then the new entry stored.
  const miss = []
  began = performance.now()
  for (let i = 0; i < MISSES; i++) {
    const t = performance.now()
    if (await store.get(`m${i}`)) throw new Error('a miss hit')
    await store.set(`m${i}`, entry(bytes, i), 86_400_000)
    miss.push(performance.now() - t)
  }
  const missRate = MISSES / ((performance.now() - began) / 1000)
  miss.sort((a, b) => a - b)
  await store.close()
  rmSync(join(path, '..'), { recursive: true, force: true })
  return { hitRate, hitP50: pct(one, 50), hitP99: pct(one, 99), concurrentRate, loopP99: delay.percentile(99) / 1e6, loopMax: delay.max / 1e6, missRate, missP50: pct(miss, 50), missP99: pct(miss, 99) }
}

const file = await startFile()
const results = Object.fromEntries(Object.keys(DRIVERS).map((name) => [name, []]))
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, driver] of Object.entries(DRIVERS)) {
    const startMs = await startup(driver, file)
    results[name].push({ startMs, ...(await hitsAndMisses(driver)) })
    process.stderr.write(`round ${round + 1} ${name}: ${JSON.stringify(results[name].at(-1), (k, v) => (typeof v === 'number' ? Math.round(v * 100) / 100 : v))}\n`)
  }
}
rmSync(dir, { recursive: true, force: true })

const col = (name, key) => spread(results[name].map((r) => r[key]))
const rows = Object.keys(DRIVERS).map(
  (name) =>
    `| ${name} | ${col(name, 'startMs')} | ${col(name, 'hitRate')} | ${col(name, 'hitP50')} / ${col(name, 'hitP99')} | ${col(name, 'concurrentRate')} | ${col(name, 'loopP99')} / ${col(name, 'loopMax')} | ${col(name, 'missRate')} | ${col(name, 'missP50')} / ${col(name, 'missP99')} |`,
)
const md = [
  `SQLite drivers, ${ROUNDS} interleaved rounds, medians (min–max); ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores shared with other work; Node ${process.version}; ${new Date().toISOString()}.`,
  `Store level (dist/sidecar/cache/sqlite-store.js, no HTTP, no hot tier). Start-up: a copy of a ${START_ROWS}-entry file (4 kB entries) opened until the store answers. Hits: ${HITS} get()s of ${HIT_ENTRIES} stored 30 kB entries, one at a time, then ${CONCURRENT} at once (event-loop delay during those, a loop turn between batches). Misses: ${MISSES} × (get() of an absent key + set() of a 30 kB entry).`,
  '',
  '| driver | start-up ms | hits/s, one at a time | hit ms p50 / p99 | hits/s, 32 at once | event-loop delay ms p99 / max (32 at once) | misses/s | miss ms p50 / p99 |',
  '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ...rows,
  '',
].join('\n')
mkdirSync(new URL('./results/', import.meta.url), { recursive: true })
writeFileSync(new URL('./results/sqlite-driver.md', import.meta.url), md)
writeFileSync(new URL('./results/sqlite-driver.json', import.meta.url), JSON.stringify({ node: process.version, rounds: ROUNDS, results }, null, 2))
process.stdout.write(md)
