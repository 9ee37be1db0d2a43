// npm run bench:tracing — what OpenTelemetry tracing costs on the warm path (cache hits, the bulk of
// traffic): four sidecars side by side in one run, tracing off, on with every request sampled, on with
// 10% sampled (OTEL_TRACES_SAMPLER=parentbased_traceidratio) and on with none, each on CPU 0 with the same warm
// memory cache, exporting to a local OTLP receiver that discards. wrk runs the rounds interleaved
// (off, on, 10%, off, …) so machine noise falls on all alike; ratios are against "off".
// BENCH_BASELINE_CLI=path/to/dist/sidecar/cli/main.js adds a fifth sidecar, an older build with tracing off
// (a `git worktree` of the commit to compare with), to measure what a change did to the warm path.
import { createServer } from 'node:http'
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, get, runWrk, startServer } from './lib.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const CORPUS = join(ROOT, '../shared/corpus')
const CLI = join(ROOT, 'dist/sidecar/cli/main.js')
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8)
const CONNECTIONS = 16
const SOURCES = ['png/chelsea.png', 'photo-jpeg/rocket.jpg', 'png/coins-gray.png', 'webp/debian-logo-alpha.webp']
const WIDTHS = [640, 750, 828, 1080, 1200]

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`)))
}

// The frontend: the corpus files, as Next serves public/.
const frontend = await listen(
  createServer((req, res) => {
    try {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(readFileSync(join(CORPUS, decodeURIComponent(req.url.slice(1)))))
    } catch {
      res.writeHead(404).end()
    }
  }),
)
// The OTLP receiver: reads and drops every export, counting spans roughly by bytes.
let exportedBytes = 0
const receiver = await listen(
  createServer((req, res) => {
    req.on('data', (c) => (exportedBytes += c.length))
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'))
  }),
)

const VARIANTS = {
  off: {},
  'on, all sampled': { OTEL_EXPORTER_OTLP_ENDPOINT: receiver },
  'on, 10% sampled': { OTEL_EXPORTER_OTLP_ENDPOINT: receiver, OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1' },
  // The SDK loaded and deciding, nothing recorded: the fixed cost of having tracing on.
  'on, none sampled': { OTEL_EXPORTER_OTLP_ENDPOINT: receiver, OTEL_TRACES_SAMPLER: 'always_off' },
}
const paths = SOURCES.flatMap((src) => WIDTHS.map((w) => `/_next/image?url=${encodeURIComponent(`/${src}`)}&w=${w}&q=75`))

const CLIS = Object.fromEntries(Object.keys(VARIANTS).map((name) => [name, CLI]))
if (process.env.BENCH_BASELINE_CLI) {
  VARIANTS['off, baseline build'] = {}
  CLIS['off, baseline build'] = process.env.BENCH_BASELINE_CLI
}

const sidecars = {}
for (const [name, env] of Object.entries(VARIANTS)) {
  const port = await freePort()
  sidecars[name] = await startServer({
    name,
    command: process.execPath,
    args: [CLIS[name], '--port', String(port), '--host', '127.0.0.1', '--frontend', frontend, '--cache', 'memory://'],
    env: { LOG_LEVEL: 'warn', OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_TRACES_EXPORTER: '', ...env },
    cpus: '0',
    url: `http://127.0.0.1:${port}`,
    readyPath: '/readyz',
  })
  for (const path of paths) {
    const res = await get(`${sidecars[name].url}${path}`, { accept: 'image/webp' })
    if (res.status !== 200) throw new Error(`${name}: ${path} answered ${res.status}`)
  }
}

const runs = Object.fromEntries(Object.keys(VARIANTS).map((name) => [name, []]))
for (let round = 0; round < ROUNDS; round++) {
  for (const name of Object.keys(VARIANTS)) {
    const result = await runWrk(sidecars[name].url, paths, CONNECTIONS, SECONDS, 'image/webp')
    if (result.failed > 0) throw new Error(`${name}: ${result.failed} failed requests`)
    runs[name].push(result)
    process.stderr.write(`round ${round + 1} ${name}: ${result.rps.toFixed(0)} req/s, p50 ${result.p50.toFixed(2)} ms, p99 ${result.p99.toFixed(2)} ms\n`)
  }
}
for (const sidecar of Object.values(sidecars)) await sidecar.stop()

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
const summary = Object.fromEntries(
  Object.entries(runs).map(([name, list]) => [name, { rps: median(list.map((r) => r.rps)), p50: median(list.map((r) => r.p50)), p99: median(list.map((r) => r.p99)), rounds: list.map((r) => Math.round(r.rps)) }]),
)
const off = summary.off
const lines = [
  '# Tracing cost on the warm path',
  '',
  `${new Date().toISOString()}, Node ${process.version}, each sidecar on one CPU (taskset 0), wrk -t2 -c${CONNECTIONS}, ${ROUNDS} interleaved rounds of ${SECONDS} s over ${paths.length} cached variants; medians.`,
  '',
  '| tracing | req/s | vs off | p50 ms | p99 ms | req/s per round |',
  '|---|---|---|---|---|---|',
  ...Object.entries(summary).map(([name, s]) => `| ${name} | ${s.rps.toFixed(0)} | ${(s.rps / off.rps).toFixed(2)}× | ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${s.rounds.join(', ')} |`),
  '',
  `OTLP bytes received: ${(exportedBytes / 1024 ** 2).toFixed(1)} MiB.`,
]
const out = join(ROOT, 'bench/results')
mkdirSync(out, { recursive: true })
writeFileSync(join(out, 'tracing.md'), `${lines.join('\n')}\n`)
writeFileSync(join(out, 'tracing.json'), `${JSON.stringify({ date: new Date().toISOString(), connections: CONNECTIONS, seconds: SECONDS, rounds: ROUNDS, summary }, null, 2)}\n`)
process.stdout.write(`${lines.join('\n')}\n`)
process.exit(0)
