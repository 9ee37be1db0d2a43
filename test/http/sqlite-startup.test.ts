/**
 * Start-up on a large SQLite cache file: the real command opens a file of 40,000 entries (~165 MB, the
 * size of a cache an emptyDir keeps across restarts) without reading its rows into memory — in a
 * pod-sized cgroup it starts and serves instead of being OOM-killed on every start.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes, createHash } from 'node:crypto'
import { once } from 'node:events'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { nodeSqlite } from '../../sidecar/cache/node-sqlite.js'
import { cgroupsAvailable, PodCgroup } from '../helpers/cgroup.js'
import { startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { freePort, REPO } from '../helpers/next-app.js'
import { waitUntil } from '../helpers/wait.js'
import { image } from '../helpers/image-url.js'
import { encodeEntry } from '../../sidecar/cache/codec.js'
import { SqliteStore } from '../../sidecar/cache/sqlite-store.js'
import pino from 'pino'

const BIN = join(REPO, 'bin/next-image-sidecar')
const MiB = 1024 ** 2
const ROWS = 40_000
const VALUE_BYTES = 4_000

let upstream: UpstreamServer
let dir: string
let bigFile: string

/**
 * A cache file as the sidecar's SQLite store leaves it (keyv's table, WAL, incremental auto-vacuum),
 * written directly in that schema: ROWS small variants, fresh for a day.
 */
async function writeCacheFile(path: string): Promise<void> {
  const db = new (nodeSqlite().DatabaseSync)(path)
  db.exec('PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; VACUUM;')
  db.exec('CREATE TABLE IF NOT EXISTS next_image_cache(key VARCHAR(255) PRIMARY KEY, value TEXT )')
  db.exec('BEGIN')
  const insert = db.prepare('INSERT INTO next_image_cache (key, value) VALUES (?, ?)')
  const bytes = randomBytes(VALUE_BYTES)
  const now = Date.now()
  for (let i = 0; i < ROWS; i++) {
    const key = createHash('sha256').update(`variant ${i}`).digest('base64url')
    const entry = { buffer: bytes, contentType: 'image/webp', maxAge: 60, expireAt: now + 60_000, etag: `e${i}`, upstreamEtag: `u${i}` }
    insert.run(key, encodeEntry(entry, now + 86_400_000))
  }
  db.exec('COMMIT')
  db.close()
}

/** A copy of the large file in a directory of its own (start-up changes the file). */
function copyOfBigFile(): string {
  const copy = join(mkdtempSync(join(dir, 'copy-')), 'cache.sqlite')
  copyFileSync(bigFile, copy)
  return copy
}

before(async () => {
  upstream = await startUpstream()
  dir = mkdtempSync(join(tmpdir(), 'nis-sqlite-startup-'))
  bigFile = join(dir, 'big.sqlite')
  await writeCacheFile(bigFile)
})
after(async () => {
  await upstream.close()
  rmSync(dir, { recursive: true, force: true })
})

interface Running {
  url: string
  child: ChildProcess
  /** Peak resident memory of the (first) process so far, bytes. */
  peakRss(): number
  stop(): Promise<void>
}

/**
 * The next-image-sidecar command on `cache`, optionally inside `group`; resolves once /readyz has
 * answered 200 `readyTimes` times in a row (the store is open: with --workers, every worker's).
 */
async function start(cache: string, { group, args = [], readyTimes = 1 }: { group?: PodCgroup; args?: string[]; readyTimes?: number } = {}): Promise<Running> {
  const port = await freePort()
  const argv = ['--host', '127.0.0.1', '--port', String(port), '--frontend', upstream.url, '--cache', `sqlite://${cache}`, ...args]
  const options = { env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'inherit'] as Array<'ignore' | 'inherit'> }
  const child = group ? group.spawn(BIN, argv, options) : spawn(BIN, argv, options)
  const url = `http://127.0.0.1:${port}`
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    await exited
    clearTimeout(timer)
  }
  let inARow = 0
  try {
    await waitUntil(async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`the sidecar exited (${child.exitCode ?? child.signalCode}) before it was ready${group ? `; OOM kills in the cgroup: ${group.oomKills}` : ''}`)
      }
      const ok = await fetch(`${url}/readyz`).then((r) => r.ok, () => false)
      inARow = ok ? inARow + 1 : 0
      return inARow >= readyTimes
    }, 'the sidecar to be ready on the large cache file', 180_000, 100)
  } catch (err) {
    await stop()
    throw err
  }
  const peakRss = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1]) * 1024
  return { url, child, peakRss, stop }
}

const getImage = (url: string, w = 256) => fetch(`${url}${image('/corpus/photo-jpeg/rocket.jpg', w)}`, { headers: { accept: 'image/webp' } })

test(`a ${ROWS}-entry cache file opens in a 256 MiB pod: ready and serving, no OOM kill`, { skip: !cgroupsAvailable() && 'needs root and cgroup v1', timeout: 300_000 }, async () => {
  process.stderr.write(`cache file: ${ROWS} rows, ${Math.round(statSync(bigFile).size / MiB)} MiB\n`)
  const group = PodCgroup.create(256 * MiB, 1)
  try {
    const sidecar = await start(copyOfBigFile(), { group })
    try {
      const res = await getImage(sidecar.url)
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('content-type'), 'image/webp')
      await res.arrayBuffer()
      assert.equal(group.oomKills, 0)
      process.stderr.write(`256 MiB pod on the large file: peak RSS ${Math.round(sidecar.peakRss() / MiB)} MiB, cgroup peak (page cache included) ${Math.round(group.peakBytes / MiB)} MiB\n`)
    } finally {
      await sidecar.stop()
    }
  } finally {
    await group.remove()
  }
})

test(`--workers 2 on a ${ROWS}-entry cache file in a 512 MiB pod: every worker ready, no OOM kill`, { skip: !cgroupsAvailable() && 'needs root and cgroup v1', timeout: 300_000 }, async () => {
  const group = PodCgroup.create(512 * MiB, 2)
  try {
    const sidecar = await start(copyOfBigFile(), { group, args: ['--workers', '2'], readyTimes: 6 })
    try {
      const res = await getImage(sidecar.url)
      assert.equal(res.status, 200)
      await res.arrayBuffer()
      assert.equal(group.oomKills, 0)
    } finally {
      await sidecar.stop()
    }
  } finally {
    await group.remove()
  }
})

/** Peak RSS of the command started on an empty cache file: what start-up costs without any entries. */
async function emptyFilePeak(): Promise<number> {
  const sidecar = await start(join(mkdtempSync(join(dir, 'empty-')), 'cache.sqlite'))
  try {
    return sidecar.peakRss()
  } finally {
    await sidecar.stop()
  }
}

test(`opening a ${ROWS}-entry file written before the file had its own index: peak RSS within 48 MiB of an empty file's`, { timeout: 300_000 }, async () => {
  const empty = await emptyFilePeak()
  const sidecar = await start(copyOfBigFile())
  try {
    const peak = sidecar.peakRss()
    process.stderr.write(`peak RSS at start: empty file ${Math.round(empty / MiB)} MiB, ${ROWS} rows ${Math.round(peak / MiB)} MiB\n`)
    assert.ok(peak - empty < 48 * MiB, `start-up on ${ROWS} rows grew the peak RSS by ${Math.round((peak - empty) / MiB)} MiB`)
  } finally {
    await sidecar.stop()
  }
})

test(`a restart on a ${ROWS}-entry file keeps its entries (a HIT) with peak RSS within 48 MiB of an empty file's`, { timeout: 300_000 }, async () => {
  const empty = await emptyFilePeak()
  const file = copyOfBigFile()
  const first = await start(file)
  try {
    const res = await getImage(first.url, 128)
    assert.equal(res.headers.get('x-nextjs-cache'), 'MISS')
    await res.arrayBuffer()
  } finally {
    await first.stop()
  }
  const second = await start(file)
  try {
    const res = await getImage(second.url, 128)
    await res.arrayBuffer()
    assert.equal(res.headers.get('x-nextjs-cache'), 'HIT')
    const peak = second.peakRss()
    process.stderr.write(`peak RSS at restart: empty file ${Math.round(empty / MiB)} MiB, ${ROWS} rows ${Math.round(peak / MiB)} MiB\n`)
    assert.ok(peak - empty < 48 * MiB, `a restart on ${ROWS} rows grew the peak RSS by ${Math.round((peak - empty) / MiB)} MiB`)
  } finally {
    await second.stop()
  }
})

/**
 * A child that opens the store on `path` when told (a line on stdin), pings it, and prints "ok" or
 * the error: several started together reach the open within a few ms of each other.
 */
const OPEN_AND_PING = `
import { createInterface } from 'node:readline'
import { once } from 'node:events'
import pino from 'pino'
import { SqliteStore } from './sidecar/cache/sqlite-store.ts'
const [path, index, count] = process.argv.slice(1)
process.stdout.write('loaded\\n')
await once(createInterface({ input: process.stdin }), 'line')
const store = new SqliteStore(path, { maxSize: 1 << 30, maxEntrySize: 1 << 24 }, pino({ level: 'silent' }), { index: Number(index), count: Number(count) })
const outcome = await store.ping().then(() => 'ok', (err) => String(err.message))
await store.close()
process.stdout.write(outcome + '\\n')
`

async function openTogether(path: string, count: number): Promise<string[]> {
  const children = Array.from({ length: count }, (_, index) =>
    spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', OPEN_AND_PING, path, String(index), String(count)], { cwd: REPO, stdio: ['pipe', 'pipe', 'inherit'], timeout: 60_000 }),
  )
  const outputs = children.map((child) => {
    let text = ''
    child.stdout!.on('data', (chunk: Buffer) => (text += chunk))
    return { child, text: () => text }
  })
  await waitUntil(() => outputs.every((o) => o.text().includes('loaded\n') || o.child.exitCode !== null), 'every child to load the store', 60_000, 20)
  for (const child of children) child.stdin!.end('go\n')
  await Promise.all(children.map((child) => (child.exitCode !== null || child.signalCode !== null ? undefined : once(child, 'exit'))))
  return outputs.map((o) => o.text().replace('loaded\n', '').trim())
}

/** The settings a cache file must have (WAL, incremental auto-vacuum) and whether SQLite finds it sound. */
function fileSettings(path: string): { journal: unknown; autoVacuum: unknown; integrity: unknown; tables: unknown[] } {
  const db = new (nodeSqlite().DatabaseSync)(path)
  try {
    return {
      journal: db.prepare('PRAGMA journal_mode').get()?.journal_mode,
      autoVacuum: db.prepare('PRAGMA auto_vacuum').get()?.auto_vacuum,
      integrity: db.prepare('PRAGMA integrity_check').get()?.integrity_check,
      tables: db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) => r.name),
    }
  } finally {
    db.close()
  }
}

const WAL_AND_INCREMENTAL = { journal: 'wal', autoVacuum: 2, integrity: 'ok' }

/** Opens the store on `path` in this process, pings it and closes it. */
async function openOnce(path: string): Promise<void> {
  const store = new SqliteStore(path, { maxSize: 1 << 30, maxEntrySize: 1 << 24 }, pino({ level: 'silent' }))
  try {
    await store.ping()
  } finally {
    await store.close()
  }
}

test('processes that open a new cache file at the same moment (a cluster starting) all find it usable, in WAL with incremental auto-vacuum', { timeout: 300_000 }, async () => {
  for (let round = 0; round < 6; round++) {
    const path = join(mkdtempSync(join(dir, 'together-')), 'cache.sqlite')
    assert.deepEqual(await openTogether(path, 3), ['ok', 'ok', 'ok'], `round ${round}`)
    const { tables, ...settings } = fileSettings(path)
    assert.deepEqual(settings, WAL_AND_INCREMENTAL, `round ${round}`)
  }
})

test('a cache path that is a link to a file not written yet (a volume file) becomes a new cache file there, in WAL with incremental auto-vacuum', async () => {
  const home = mkdtempSync(join(dir, 'link-'))
  mkdirSync(join(home, 'volume'))
  symlinkSync(join(home, 'volume', 'cache.sqlite'), join(home, 'cache.sqlite'))
  await openOnce(join(home, 'cache.sqlite'))
  const { tables, ...settings } = fileSettings(join(home, 'volume', 'cache.sqlite'))
  assert.deepEqual(settings, WAL_AND_INCREMENTAL)
})

test('an empty file at the cache path (a start killed before it set the file up) is set up as a new cache file', async () => {
  const path = join(mkdtempSync(join(dir, 'empty-file-')), 'cache.sqlite')
  writeFileSync(path, '')
  await openOnce(path)
  const { tables, ...settings } = fileSettings(path)
  assert.deepEqual(settings, WAL_AND_INCREMENTAL)
})

test('a file a start left part set up (killed after its auto-vacuum setting, before WAL) is set up as a new cache file', async () => {
  const path = join(mkdtempSync(join(dir, 'part-set-up-')), 'cache.sqlite')
  // What the setup's first statement leaves on disk: a 4,096-byte header in rollback-journal mode, no table.
  const part = new (nodeSqlite().DatabaseSync)(path)
  part.exec('PRAGMA auto_vacuum = INCREMENTAL')
  part.close()
  assert.ok(statSync(path).size > 0, 'the part set-up file is not empty')
  await openOnce(path)
  const { tables, ...settings } = fileSettings(path)
  assert.deepEqual(settings, WAL_AND_INCREMENTAL)
})

test('a WAL left behind by a deleted cache file is not replayed into the new file', async () => {
  const path = join(mkdtempSync(join(dir, 'orphan-wal-')), 'cache.sqlite')
  // A process that wrote into its WAL and died before a checkpoint; then its file was deleted, not the WAL.
  const old = new (nodeSqlite().DatabaseSync)(path)
  old.exec('PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE old_stuff (v BLOB)')
  const insert = old.prepare('INSERT INTO old_stuff (v) VALUES (?)')
  for (let i = 0; i < 200; i++) insert.run(randomBytes(4096))
  const wal = readFileSync(`${path}-wal`)
  old.close()
  rmSync(path)
  writeFileSync(`${path}-wal`, wal)
  await openOnce(path)
  const { tables, ...settings } = fileSettings(path)
  assert.deepEqual(settings, WAL_AND_INCREMENTAL)
  assert.ok(!tables.includes('old_stuff'), `the old file's table came back from its WAL: ${tables.join(', ')}`)
})
