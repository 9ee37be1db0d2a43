/** Container limits (cgroup v1 and v2 files as the kernel writes them) and what the sidecar derives from them. */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { ancestry, cpusOf, parseBytes, parseCpuMax, parseMemoryLimit, parseProcCgroup, planMemory, readContainerLimits, RUNTIME_RESERVE } from '../../sidecar/runtime/limits.js'
import { estimateWorkingSet } from '../../sidecar/image/memory-estimate.js'
import { execFileSync } from 'node:child_process'
import { mkdirSync, rmdirSync, writeFileSync } from 'node:fs'
import { cgroupsAvailable } from '../helpers/cgroup.js'

const MiB = 1024 ** 2

describe('reading cgroup files', () => {
  test('v2 memory.max: bytes, or "max" for none', () => {
    assert.equal(parseMemoryLimit('268435456\n'), 256 * MiB)
    assert.equal(parseMemoryLimit('max\n'), undefined)
  })
  test('v1 memory.limit_in_bytes: the page-rounded 2^63 means none', () => {
    assert.equal(parseMemoryLimit('9223372036854771712\n'), undefined)
    assert.equal(parseMemoryLimit('402653184'), 384 * MiB)
  })
  test('v2 cpu.max: "quota period" in CPUs, "max period" for none', () => {
    assert.equal(parseCpuMax('150000 100000\n'), 1.5)
    assert.equal(parseCpuMax('max 100000\n'), undefined)
  })
  test('v1 cfs quota -1 means none', () => {
    assert.equal(cpusOf('-1', '100000'), undefined)
    assert.equal(cpusOf('50000', '100000'), 0.5)
  })
  test('/proc/self/cgroup: v1 controllers (also combined ones) and the v2 path', () => {
    const text = '12:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/kubepods/pod1/c1\n1:name=systemd:/x\n0::/kubepods/pod1/c1\n'
    assert.deepEqual(parseProcCgroup(text), { memory: '/kubepods/pod1/c1', cpu: '/kubepods/pod1/c1', v2: '/kubepods/pod1/c1' })
  })
  test('/proc/self/cgroup: a path with colons in it is kept whole (only the first two colons separate fields)', () => {
    const text = '12:memory:/kubepods/pod1/cri-containerd:abc:def\n4:cpu,cpuacct:/a:b\n0::/system.slice/x:y:z.scope\n'
    assert.deepEqual(parseProcCgroup(text), { memory: '/kubepods/pod1/cri-containerd:abc:def', cpu: '/a:b', v2: '/system.slice/x:y:z.scope' })
  })
  test('a group’s ancestry goes up to the root', () => {
    assert.deepEqual(ancestry('/a/b'), ['/a/b', '/a', '/'])
    assert.deepEqual(ancestry('/'), ['/'])
  })
})

describe('the limits of a process', () => {
  const files = (entries: Record<string, string>) => (path: string) => entries[path]
  test('a real cgroup v1 whose name holds colons: its memory limit is read', { skip: !cgroupsAvailable() && 'needs writable cgroup v1 (root)' }, () => {
    const dir = `/sys/fs/cgroup/memory/nis-test:${process.pid}:colons`
    mkdirSync(dir)
    try {
      writeFileSync(`${dir}/memory.limit_in_bytes`, String(300 * MiB))
      const probe = `import { readContainerLimits } from ${JSON.stringify(new URL('../../sidecar/runtime/limits.ts', import.meta.url).href)}; console.log(readContainerLimits().memoryLimitBytes)`
      const out = execFileSync('sh', ['-c', `echo $$ > '${dir}/cgroup.procs' && exec "$0" --import tsx --input-type=module -e "$1"`, process.execPath, probe], { encoding: 'utf8' })
      assert.equal(Number(out.trim()), 300 * MiB)
    } finally {
      rmdirSync(dir)
    }
  })
  test('cgroup v2: the tightest limit on the way up wins', () => {
    const limits = readContainerLimits(
      '/cg',
      files({
        '/proc/self/cgroup': '0::/pod/app\n',
        '/cg/pod/app/memory.max': 'max\n',
        '/cg/pod/memory.max': String(256 * MiB),
        '/cg/pod/app/cpu.max': '100000 100000\n',
        '/cg/pod/cpu.max': 'max 100000\n',
      }),
    )
    assert.equal(limits.source, 'cgroup v2')
    assert.equal(limits.memoryLimitBytes, 256 * MiB)
    assert.equal(limits.cpus, 1)
  })
  test('cgroup v1: memory and cpu controllers each in their own tree', () => {
    const limits = readContainerLimits(
      '/cg',
      files({
        '/proc/self/cgroup': '4:memory:/nis\n2:cpu,cpuacct:/nis\n0::/\n',
        '/cg/memory/nis/memory.limit_in_bytes': String(384 * MiB),
        '/cg/memory/memory.limit_in_bytes': '9223372036854771712',
        '/cg/cpu/nis/cpu.cfs_quota_us': '100000',
        '/cg/cpu/nis/cpu.cfs_period_us': '100000',
        '/cg/cpu/cpu.cfs_quota_us': '-1',
        '/cg/cpu/cpu.cfs_period_us': '100000',
      }),
    )
    assert.equal(limits.source, 'cgroup v1')
    assert.equal(limits.memoryLimitBytes, 384 * MiB)
    assert.equal(limits.cpus, 1)
  })
  test('no cgroup limits: the cores Node may use and no memory limit', () => {
    const limits = readContainerLimits('/cg', files({ '/proc/self/cgroup': '0::/\n' }))
    assert.equal(limits.source, 'none')
    assert.equal(limits.memoryLimitBytes, undefined)
    assert.equal(limits.cpus, limits.cores)
  })
  test('a quota above the cores counts as the cores', () => {
    const limits = readContainerLimits('/cg', files({ '/proc/self/cgroup': '0::/x\n', '/cg/x/cpu.max': '6400000 100000' }))
    assert.equal(limits.cpus, limits.cores)
  })
})

describe('the memory plan', () => {
  test('a 256 MiB pod: a 16 MiB hot cache, the rest after the runtime for images, a fifth of it kept back', () => {
    const plan = planMemory({ memoryLimitBytes: 256 * MiB, hostMemoryBytes: 64 * 1024 * MiB })
    assert.equal(plan.limitBytes, 256 * MiB)
    assert.equal(plan.hotCacheBytes, 16 * MiB)
    assert.equal(plan.maxJobBytes, 256 * MiB - RUNTIME_RESERVE - 16 * MiB)
    assert.equal(plan.budgetBytes, Math.floor(plan.maxJobBytes * 0.8))
  })
  test('no limit: half the host memory, the usual 64 MiB hot cache', () => {
    const plan = planMemory({ memoryLimitBytes: undefined, hostMemoryBytes: 16 * 1024 * MiB })
    assert.equal(plan.limitBytes, 8 * 1024 * MiB)
    assert.equal(plan.hotCacheBytes, 64 * MiB)
  })
  test('--memory-limit and --hot-cache-size win', () => {
    const plan = planMemory({ memoryLimitBytes: 256 * MiB, hostMemoryBytes: 64 * 1024 * MiB }, { memoryLimitBytes: 1024 * MiB, hotCacheBytes: 0 })
    assert.equal(plan.limitBytes, 1024 * MiB)
    assert.equal(plan.hotCacheBytes, 0)
  })
  test('Kubernetes quantities', () => {
    assert.equal(parseBytes('256Mi'), 256 * MiB)
    assert.equal(parseBytes('1Gi'), 1024 * MiB)
    assert.equal(parseBytes('512M'), 512e6)
    assert.equal(parseBytes('268435456'), 256 * MiB)
    assert.equal(parseBytes('lots'), undefined)
  })
})

describe('the working-set estimate', () => {
  const photo = { format: 'jpeg', width: 3840, height: 2160, channels: 3, depth: 'uchar' }
  test('grows with the output size', () => {
    assert.ok(estimateWorkingSet(photo, 2_000_000, 3840, 'image/webp') > estimateWorkingSet(photo, 2_000_000, 640, 'image/webp') * 5)
  })
  test('never enlarges: a width past the source costs what the source size costs', () => {
    assert.equal(estimateWorkingSet(photo, 2_000_000, 7680, 'image/webp'), estimateWorkingSet(photo, 2_000_000, 3840, 'image/webp'))
  })
  test('AVIF output costs several times WebP', () => {
    assert.ok(estimateWorkingSet(photo, 2_000_000, 3840, 'image/avif') > 3 * estimateWorkingSet(photo, 2_000_000, 3840, 'image/webp'))
  })
  test('a WebP source is decoded whole; a JPEG line by line', () => {
    const webp = { ...photo, format: 'webp' }
    assert.ok(estimateWorkingSet(webp, 2_000_000, 3840, 'image/webp') - estimateWorkingSet(photo, 2_000_000, 3840, 'image/webp') >= 3840 * 2160 * 3)
  })
  test('a rotated JPEG (EXIF 6) is decoded whole to be turned', () => {
    assert.ok(estimateWorkingSet({ ...photo, orientation: 6 }, 2_000_000, 640, 'image/webp') > estimateWorkingSet(photo, 2_000_000, 640, 'image/webp') + 3840 * 2160 * 3 - 1)
  })
})

test('the allocator logged at start names the glibc tunings the command set', async () => {
  const { allocator } = await import('../../sidecar/runtime/limits.js')
  const noJemalloc = () => '7f00-7f01 r-xp 0 0:0 0 /usr/lib/x86_64-linux-gnu/libc.so.6'
  assert.equal(allocator(noJemalloc, { MALLOC_ARENA_MAX: '2', GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=131072' }), 'glibc (MALLOC_ARENA_MAX=2, GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072)')
  assert.equal(allocator(noJemalloc, {}), 'glibc')
  assert.equal(allocator(() => '7f00-7f01 r-xp 0 0:0 0 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2', { MALLOC_ARENA_MAX: '2' }), 'jemalloc')
})
