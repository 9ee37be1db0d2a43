import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PodCgroup } from '../test/helpers/cgroup.js'
import { startUpstream } from '../test/helpers/upstream-server.js'
import { CLI } from '../test/helpers/cli.js'
import { freePort } from '../test/helpers/next-app.js'
import { waitUntil } from '../test/helpers/wait.js'

const mem = Number(process.env.MEM ?? 256) * 1024 ** 2
const extra = (process.env.ARGS ?? '').split(' ').filter(Boolean)
const upstream = await startUpstream()
const group = PodCgroup.create(mem, 1)
const port = await freePort()
const dir = mkdtempSync(join(tmpdir(), 'probe-'))
const child = group.spawn(process.execPath, [...(process.env.NODEARGS ?? '').split(' ').filter(Boolean), CLI, '--host', '127.0.0.1', '--port', String(port), '--frontend', upstream.url, '--cache', `sqlite://${dir}/c.sqlite`, ...extra], { env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' }, stdio: ['ignore', 'inherit', 'inherit'] })
let exit: unknown = null
child.on('exit', (code, signal) => (exit = { code, signal }))
const url = `http://127.0.0.1:${port}`
await waitUntil(async () => { try { return (await fetch(`${url}/healthz`)).ok } catch { return false } }, 'sidecar', 20000)
const idle = group.usageBytes
const files = ['large/elephants-3840x2160.jpg', 'large/truchet-dark-4096.webp', 'large/float-into-mate.png', 'photo-jpeg/storm.jpg', 'photo-jpeg/garden.jpg', 'photo-jpeg/aqua.jpg', 'photo-jpeg/aqua-cmyk.jpg', 'photo-jpeg/ladybird.jpg', 'photo-jpeg/green-meadow.jpg', 'photo-jpeg/garden-progressive.jpg']
const widths = [640, 1080, 1920, 2048, 3840, 750]
const variants = files.flatMap((f) => widths.map((w) => `/_next/image?url=${encodeURIComponent('/corpus/' + f)}&w=${w}&q=75`))
const statuses: Record<string, number> = {}
let next = 0
const t0 = performance.now()
await Promise.all(Array.from({ length: 32 }, async () => {
  while (next < variants.length) {
    const v = variants[next++]!
    try {
      const r = await fetch(url + v, { headers: { accept: process.env.ACCEPT ?? 'image/webp' } })
      await r.arrayBuffer()
      const k = String(r.status) + (r.status === 503 ? `(ra ${r.headers.get('retry-after')})` : '')
      statuses[k] = (statuses[k] ?? 0) + 1
    } catch (e) { statuses['error'] = (statuses['error'] ?? 0) + 1 }
  }
}))
const secs = (performance.now() - t0) / 1000
let hwm = ''
try { hwm = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]! } catch {}
const stat = readFileSync(`/sys/fs/cgroup/memory/${group.name}/memory.stat`, 'utf8').split('\n').filter((l) => /^(total_)?(rss|cache|mapped_file|dirty|writeback) /.test(l)).join(' ')
console.log(JSON.stringify({ mem: mem / 1024 ** 2, args: extra, statuses, secs: secs.toFixed(1), idleMiB: (idle / 1024 ** 2).toFixed(0), peakMiB: (group.peakBytes / 1024 ** 2).toFixed(0), oom: group.oomKills, exit, hwmMiB: (Number(hwm) / 1024).toFixed(0), stat }))
const rssOf = () => Number(/^rss (\d+)/m.exec(readFileSync(`/sys/fs/cgroup/memory/${group.name}/memory.stat`, 'utf8'))![1]) / 1024 ** 2
const after0 = rssOf()
await new Promise((r) => setTimeout(r, Number(process.env.AFTER ?? 20000)))
console.log(JSON.stringify({ rssAfterBurst: after0.toFixed(0), rssAfter20s: rssOf().toFixed(0) }))
child.kill('SIGKILL')
await new Promise((r) => exit ? r(0) : child.once('exit', r))
await group.remove()
await upstream.close()
