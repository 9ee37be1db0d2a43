// Building blocks of the benchmark: processes, load generators, statistics, RSS sampling.
import { spawn, execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { readFileSync, existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { Agent, createServer as createHttpServer, request } from 'node:http'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export async function freePort() {
  const server = createServer().listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  const { port } = server.address()
  await new Promise((r) => server.close(r))
  return port
}

/**
 * Spawns a server (optionally pinned to CPUs with taskset) and waits until `readyPath` answers; `stop`
 * sends SIGTERM and, after `stopTimeoutMs`, SIGKILL.
 */
export async function startServer({ name, command, args, cwd, env, cpus, url, readyPath = '/', stopTimeoutMs = 5000 }) {
  const [cmd, argv] = cpus ? ['taskset', ['-c', cpus, command, ...args]] : [command, args]
  const child = spawn(cmd, argv, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c) => (stderr += c))
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited: ${stderr}`)
    try {
      const res = await fetch(`${url}${readyPath}`)
      await res.arrayBuffer()
      break
    } catch {
      if (i > 600) throw new Error(`${name} did not start: ${stderr}`)
      await sleep(100)
    }
  }
  return {
    name,
    url,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await Promise.race([exited, sleep(stopTimeoutMs)])
      if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}

const agent = new Agent({ keepAlive: true, maxSockets: 256 })

/** Requests `paths` at `concurrency`, each once (as WebP); counts 200s, 503s with Retry-After, other answers and errors. */
export async function burst(origin, paths, concurrency) {
  const counts = { 200: 0, 503: 0, other: 0, errors: 0 }
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < paths.length) {
        const path = paths[next++]
        try {
          const res = await get(`${origin}${path}`, { accept: 'image/webp' })
          if (res.status === 200) counts[200]++
          else if (res.status === 503 && res.headers['retry-after']) counts[503]++
          else counts.other++
        } catch {
          counts.errors++
        }
      }
    }),
  )
  const seconds = (performance.now() - started) / 1000
  return { ...counts, seconds, rps: counts[200] / seconds }
}

/** One GET, body read to the end; resolves with status, headers and latency in ms. */
export function get(url, headers = {}) {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers }, (res) => {
      let bytes = 0
      res.on('data', (c) => (bytes += c.length))
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, bytes, ms: performance.now() - started }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

export function summarize(latencies, seconds) {
  const sorted = [...latencies].sort((a, b) => a - b)
  return {
    requests: sorted.length,
    rps: sorted.length / seconds,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
  }
}

/** Closed loop: `concurrency` workers go through `urls` once; every response must be 200. */
export async function runList(urls, concurrency, headers) {
  const latencies = []
  let next = 0
  let failed = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < urls.length) {
        const url = urls[next++]
        const res = await get(url, headers)
        if (res.status !== 200) failed++
        latencies.push(res.ms)
      }
    }),
  )
  const seconds = (performance.now() - started) / 1000
  return { ...summarize(latencies, seconds), seconds, failed, latencies }
}

/** Open loop: one request every 1/rate s for `seconds`, whatever the server's pace. */
export async function runRate(url, rate, seconds) {
  const latencies = []
  const pending = []
  let failed = 0
  const interval = 1000 / rate
  const started = performance.now()
  for (let i = 0; performance.now() - started < seconds * 1000; i++) {
    pending.push(
      get(url).then(
        (res) => {
          if (res.status !== 200) failed++
          latencies.push(res.ms)
        },
        () => failed++,
      ),
    )
    const due = started + (i + 1) * interval
    await sleep(Math.max(0, due - performance.now()))
  }
  await Promise.all(pending)
  return { ...summarize(latencies, seconds), failed }
}

/**
 * wrk over a list of paths (a Lua script cycles through them), as the warm-cache load.
 * Asynchronous on purpose: the static reference server lives in this process.
 */
export async function runWrk(origin, paths, connections, seconds, accept, { timeoutSeconds = 2, cpus } = {}) {
  const script = `local paths = {${paths.map((p) => JSON.stringify(p)).join(',')}}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1], { ["Accept"] = ${JSON.stringify(accept)} })
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\":%d,\\"seconds\\":%f,\\"p50\\":%f,\\"p99\\":%f,\\"non2xx\\":%d,\\"errors\\":%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end`
  const file = `/tmp/nis-bench-${process.pid}.lua`
  execFileSync('sh', ['-c', `cat > ${file}`], { input: script })
  const argv = ['-t2', `-c${connections}`, `-d${seconds}s`, '--timeout', `${timeoutSeconds}s`, '-s', file, origin]
  const { stdout: out } = await promisify(execFile)(cpus ? 'taskset' : 'wrk', cpus ? ['-c', cpus, 'wrk', ...argv] : argv, { encoding: 'utf8' })
  const json = JSON.parse(out.split('\n').find((l) => l.startsWith('JSON ')).slice(5))
  return { rps: json.requests / json.seconds, p50: json.p50, p99: json.p99, requests: json.requests, failed: json.non2xx + json.errors }
}

/** Resident memory (bytes) of a process and its children, from /proc. */
export function rssOfTree(pid) {
  let total = 0
  const visit = (p) => {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8')
      total += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024
    } catch {
      return
    }
    const childrenFile = `/proc/${p}/task/${p}/children`
    if (existsSync(childrenFile)) for (const c of readFileSync(childrenFile, 'utf8').trim().split(/\s+/).filter(Boolean)) visit(c)
  }
  visit(pid)
  return total
}

/** Samples a process tree's RSS every 100 ms until stopped; returns the peak. */
export function sampleRss(pid) {
  let peak = rssOfTree(pid)
  const timer = setInterval(() => (peak = Math.max(peak, rssOfTree(pid))), 100)
  return () => {
    clearInterval(timer)
    return Math.max(peak, rssOfTree(pid))
  }
}

export async function metricValue(origin, name) {
  const text = await (await fetch(`${origin}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line ? Number(line.split(' ')[1]) : 0
}

/** A line chart as a standalone SVG (no dependency): one polyline per series, a dashed line for `limit`. */
export function lineChart({ title, xLabel, yLabel, series, limit }) {
  const W = 760
  const H = 360
  const pad = { left: 56, right: 150, top: 36, bottom: 44 }
  const xs = series.flatMap((s) => s.points.map((p) => p[0]))
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).concat(limit ? [limit.value] : [])
  const xMax = Math.max(...xs, 1)
  const yMax = Math.max(...ys, 1) * 1.1
  const x = (v) => pad.left + (v / xMax) * (W - pad.left - pad.right)
  const y = (v) => H - pad.bottom - (v / yMax) * (H - pad.top - pad.bottom)
  const colors = ['#d62728', '#1f77b4', '#2ca02c', '#9467bd']
  const ticks = (max, n) => Array.from({ length: n + 1 }, (_, i) => (max * i) / n)
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;')
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${pad.left}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    ...ticks(yMax, 5).map((v) => `<line x1="${pad.left}" x2="${W - pad.right}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/><text x="${pad.left - 6}" y="${y(v) + 4}" text-anchor="end">${Math.round(v)}</text>`),
    ...ticks(xMax, 6).map((v) => `<text x="${x(v)}" y="${H - pad.bottom + 16}" text-anchor="middle">${Math.round(v)}</text>`),
    `<text x="${(pad.left + W - pad.right) / 2}" y="${H - 8}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text x="14" y="${(pad.top + H - pad.bottom) / 2}" transform="rotate(-90 14 ${(pad.top + H - pad.bottom) / 2})" text-anchor="middle">${esc(yLabel)}</text>`,
    `<line x1="${pad.left}" x2="${pad.left}" y1="${pad.top}" y2="${H - pad.bottom}" stroke="#000"/><line x1="${pad.left}" x2="${W - pad.right}" y1="${H - pad.bottom}" y2="${H - pad.bottom}" stroke="#000"/>`,
  ]
  if (limit) parts.push(`<line x1="${pad.left}" x2="${W - pad.right}" y1="${y(limit.value)}" y2="${y(limit.value)}" stroke="#555" stroke-dasharray="6 4"/><text x="${W - pad.right - 4}" y="${y(limit.value) - 6}" text-anchor="end">${esc(limit.label)}</text>`)
  series.forEach((s, i) => {
    const color = colors[i % colors.length]
    if (s.points.length > 0) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${s.points.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(' ')}"/>`)
    parts.push(`<rect x="${W - pad.right + 6}" y="${pad.top + 10 + i * 20}" width="12" height="3" fill="${color}"/><text x="${W - pad.right + 22}" y="${pad.top + 15 + i * 20}">${esc(s.name)}</text>`)
  })
  parts.push('</svg>')
  return parts.join('\n')
}

/** Least-squares slope of (x, y) points. */
export function slope(points) {
  const n = points.length
  if (n < 2) return 0
  const mx = points.reduce((s, p) => s + p[0], 0) / n
  const my = points.reduce((s, p) => s + p[1], 0) / n
  const sxy = points.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0)
  const sxx = points.reduce((s, p) => s + (p[0] - mx) ** 2, 0)
  return sxx === 0 ? 0 : sxy / sxx
}

/**
 * The example app's photos as `next start` serves public/ (generated first, as `next build`'s prebuild
 * does), from this process, which is idle during the measured rounds. Resolves with its URL and stop().
 */
export async function servePublic(app) {
  execFileSync(process.execPath, ['scripts/generate-images.mjs'], { cwd: app, stdio: ['ignore', 'ignore', 'inherit'] })
  const server = createHttpServer((req, res) => {
    let bytes
    try {
      bytes = readFileSync(join(app, 'public', decodeURIComponent(req.url.split('?')[0])))
    } catch {
      return void res.writeHead(404).end()
    }
    res.writeHead(200, { 'content-type': 'image/jpeg' }).end(bytes)
  }).listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  return { url: `http://127.0.0.1:${server.address().port}`, stop: async () => server.close() }
}
