import { readFileSync } from 'node:fs'
import { availableParallelism, totalmem } from 'node:os'
import { join } from 'node:path'

/**
 * What the container (or the host) lets this process use. `os.availableParallelism()` ignores a
 * cgroup CPU quota, and nothing in Node reports a cgroup memory limit, so they are read here:
 * cgroup v2 (`cpu.max`, `memory.max`) and v1 (`cpu.cfs_quota_us`/`cpu.cfs_period_us`,
 * `memory.limit_in_bytes`), for the process's own group and every group above it.
 */
export interface ContainerLimits {
  /** CPUs the quota allows (fractional), else the cores Node may use. */
  cpus: number
  /** The cgroup memory limit in bytes, or undefined when there is none. */
  memoryLimitBytes: number | undefined
  hostMemoryBytes: number
  cores: number
  source: 'cgroup v2' | 'cgroup v1' | 'none'
}

// A v1 "no limit" is a page-rounded 2^63 - 1; anything this large means none.
const UNLIMITED = 2 ** 60

/** `memory.max` (v2: "max" or bytes) or `memory.limit_in_bytes` (v1: bytes) → bytes, or undefined. */
export function parseMemoryLimit(raw: string | undefined): number | undefined {
  const text = raw?.trim()
  if (!text || text === 'max') return undefined
  const bytes = Number(text)
  return Number.isFinite(bytes) && bytes > 0 && bytes < UNLIMITED ? bytes : undefined
}

/** `cpu.max` (v2: "QUOTA PERIOD" or "max PERIOD") → CPUs, or undefined when unlimited. */
export function parseCpuMax(raw: string | undefined): number | undefined {
  const [quota, period] = (raw ?? '').trim().split(/\s+/)
  return cpusOf(quota, period)
}

/** v1 `cpu.cfs_quota_us` (-1: unlimited) and `cpu.cfs_period_us` → CPUs, or undefined. */
export function cpusOf(quota: string | undefined, period: string | undefined): number | undefined {
  const q = Number(quota)
  const p = Number(period)
  return Number.isFinite(q) && q > 0 && Number.isFinite(p) && p > 0 ? q / p : undefined
}

/**
 * `/proc/self/cgroup` → the v2 path and the v1 paths of the memory and cpu controllers. Each line is
 * `hierarchy-ID:controller-list:path`; the path may itself hold colons, so only the first two separate.
 */
export function parseProcCgroup(text: string): { v2?: string; memory?: string; cpu?: string } {
  const paths: { v2?: string; memory?: string; cpu?: string } = {}
  for (const line of text.split('\n')) {
    const first = line.indexOf(':')
    const second = first < 0 ? -1 : line.indexOf(':', first + 1)
    if (second < 0) continue
    const [id, controllers, path] = [line.slice(0, first), line.slice(first + 1, second), line.slice(second + 1)]
    if (id === '0' && controllers === '') paths.v2 = path
    for (const c of controllers.split(',')) {
      if (c === 'memory') paths.memory = path
      if (c === 'cpu') paths.cpu = path
    }
  }
  return paths
}

/** The group and each group above it, down to the hierarchy's root: "/a/b" → ["/a/b", "/a", "/"]. */
export function ancestry(path: string): string[] {
  const parts = path.split('/').filter(Boolean)
  return Array.from({ length: parts.length + 1 }, (_, i) => `/${parts.slice(0, parts.length - i).join('/')}`)
}

const min = (values: Array<number | undefined>) => values.reduce<number | undefined>((m, v) => (v === undefined ? m : m === undefined ? v : Math.min(m, v)), undefined)

/** Reads the limits of this process (I/O at the edge; `root` and `read` are injectable for tests). */
export function readContainerLimits(root = '/sys/fs/cgroup', read: (path: string) => string | undefined = readIfExists): ContainerLimits {
  const cores = availableParallelism()
  const hostMemoryBytes = totalmem()
  const paths = parseProcCgroup(read('/proc/self/cgroup') ?? '')
  let cpus: number | undefined
  let memoryLimitBytes: number | undefined
  let source: ContainerLimits['source'] = 'none'
  if (paths.memory !== undefined || paths.cpu !== undefined) {
    // v1 (also "hybrid" hosts, where the controllers live in v1): each controller has its own tree.
    memoryLimitBytes = min(ancestry(paths.memory ?? '/').map((p) => parseMemoryLimit(read(join(root, 'memory', p, 'memory.limit_in_bytes')))))
    cpus = min(ancestry(paths.cpu ?? '/').map((p) => cpusOf(read(join(root, 'cpu', p, 'cpu.cfs_quota_us')), read(join(root, 'cpu', p, 'cpu.cfs_period_us')))))
    if (memoryLimitBytes !== undefined || cpus !== undefined) source = 'cgroup v1'
  } else if (paths.v2 !== undefined) {
    memoryLimitBytes = min(ancestry(paths.v2).map((p) => parseMemoryLimit(read(join(root, p, 'memory.max')))))
    cpus = min(ancestry(paths.v2).map((p) => parseCpuMax(read(join(root, p, 'cpu.max')))))
    if (memoryLimitBytes !== undefined || cpus !== undefined) source = 'cgroup v2'
  }
  return {
    cpus: Math.min(cpus ?? cores, cores),
    memoryLimitBytes: memoryLimitBytes !== undefined && memoryLimitBytes < hostMemoryBytes ? memoryLimitBytes : undefined,
    hostMemoryBytes,
    cores,
    source,
  }
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
}

const MiB = 1024 ** 2

/**
 * What the process itself needs beside image work, measured at rest and under load: Node, V8's
 * heap, libvips and sharp loaded, the SQLite client, request and response buffers (~40–60 MiB).
 */
export const RUNTIME_RESERVE = 64 * MiB

/** The memory the sidecar plans with, derived from the limits (pure). */
export interface MemoryPlan {
  /** The memory limit planned for: the cgroup's, `--memory-limit`, or half the host's memory. */
  limitBytes: number
  /** The in-process hot cache tier: 64 MiB, or a sixteenth of the limit when that is smaller. */
  hotCacheBytes: number
  /** Bytes the admitted image jobs' estimated working sets may add up to. */
  budgetBytes: number
  /** The largest single job ever run (alone); a larger estimate is refused with 503. */
  maxJobBytes: number
}

export function planMemory(limits: Pick<ContainerLimits, 'memoryLimitBytes' | 'hostMemoryBytes'>, options: { memoryLimitBytes?: number; hotCacheBytes?: number } = {}): MemoryPlan {
  const limitBytes = options.memoryLimitBytes ?? limits.memoryLimitBytes ?? Math.floor(limits.hostMemoryBytes / 2)
  const hotCacheBytes = options.hotCacheBytes ?? Math.min(64 * MiB, Math.floor(limitBytes / 16))
  const maxJobBytes = Math.max(limitBytes - RUNTIME_RESERVE - hotCacheBytes, 16 * MiB)
  // A fifth kept back for what estimates miss: allocator fragmentation, GC timing, page tables.
  const budgetBytes = Math.floor(maxJobBytes * 0.8)
  return { limitBytes, hotCacheBytes, budgetBytes, maxJobBytes }
}

/** Transforms at once by default: one per CPU the quota allows (at least one), shared by the workers. */
export function defaultConcurrency(cpus: number, workers = 1): number {
  return Math.max(Math.floor(cpus / workers), 1)
}

/** The malloc in use: jemalloc when preloaded (LD_PRELOAD, as the Dockerfile does), else glibc's. */
export function allocator(read: (path: string) => string | undefined = readIfExists, env: NodeJS.ProcessEnv = process.env): string {
  if ((read('/proc/self/maps') ?? '').includes('libjemalloc')) return 'jemalloc'
  const tuning = [env.MALLOC_ARENA_MAX && `MALLOC_ARENA_MAX=${env.MALLOC_ARENA_MAX}`, env.GLIBC_TUNABLES && `GLIBC_TUNABLES=${env.GLIBC_TUNABLES}`].filter(Boolean)
  return tuning.length > 0 ? `glibc (${tuning.join(', ')})` : 'glibc'
}

/** "268435456", "256Mi", "512M", "1Gi", "1G" (Kubernetes quantities) → bytes; undefined when malformed. */
export function parseBytes(raw: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*(k|Ki|M|Mi|G|Gi)?B?$/.exec(raw.trim())
  if (!match) return undefined
  const unit = { k: 1e3, Ki: 1024, M: 1e6, Mi: 1024 ** 2, G: 1e9, Gi: 1024 ** 3 }[match[2] ?? ''] ?? 1
  const bytes = Math.floor(Number(match[1]) * unit)
  return bytes > 0 ? bytes : undefined
}
