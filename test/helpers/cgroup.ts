import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { waitUntil } from './wait.js'

const V1 = '/sys/fs/cgroup'

/** Whether this machine lets the tests create cgroup v1 memory and cpu groups (root, writable hierarchy). */
export function cgroupsAvailable(): boolean {
  try {
    return process.getuid?.() === 0 && existsSync(join(V1, 'memory/cgroup.procs')) && existsSync(join(V1, 'cpu/cpu.cfs_quota_us'))
  } catch {
    return false
  }
}

/**
 * A pod-sized cgroup (v1 memory + cpu controllers), as Kubernetes makes one for
 * `limits.memory` and `limits.cpu`. Processes started through `spawn` run inside it.
 * Remove it with `remove()` once its processes have exited.
 */
export class PodCgroup {
  readonly name: string
  private constructor(
    readonly memoryBytes: number,
    readonly cpus: number,
  ) {
    this.name = `nis-test-${process.pid}-${Date.now()}`
  }

  static create(memoryBytes: number, cpus: number): PodCgroup {
    const group = new PodCgroup(memoryBytes, cpus)
    mkdirSync(group.dir('memory'))
    mkdirSync(group.dir('cpu'))
    writeFileSync(join(group.dir('memory'), 'memory.limit_in_bytes'), String(memoryBytes))
    // No swap to escape into: the limit is the memory a container really has.
    if (existsSync(join(group.dir('memory'), 'memory.memsw.limit_in_bytes'))) writeFileSync(join(group.dir('memory'), 'memory.memsw.limit_in_bytes'), String(memoryBytes))
    const period = Number(readFileSync(join(group.dir('cpu'), 'cpu.cfs_period_us'), 'utf8'))
    writeFileSync(join(group.dir('cpu'), 'cpu.cfs_quota_us'), String(Math.round(cpus * period)))
    return group
  }

  private dir(controller: 'memory' | 'cpu'): string {
    return join(V1, controller, this.name)
  }

  private read(file: string): string {
    return readFileSync(join(this.dir('memory'), file), 'utf8')
  }

  /** Runs a command inside the group: a shell joins it, then execs the command (so the pid is the command's). */
  spawn(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; stdio?: Array<'ignore' | 'pipe' | 'inherit'> } = {}): ChildProcess {
    const quoted = [command, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')
    const join = `echo $$ > ${this.dir('memory')}/cgroup.procs && echo $$ > ${this.dir('cpu')}/cgroup.procs && exec ${quoted}`
    return spawn('sh', ['-c', join], { env: options.env ?? process.env, cwd: options.cwd, stdio: (options.stdio as never) ?? ['ignore', 'pipe', 'pipe'] })
  }

  /** The group's peak memory use (page cache included, as the OOM killer counts it), bytes. */
  get peakBytes(): number {
    return Number(this.read('memory.max_usage_in_bytes'))
  }

  /** Starts the peak over from the current use (v1 takes any write to max_usage_in_bytes as a reset). */
  resetPeak(): void {
    writeFileSync(join(this.dir('memory'), 'memory.max_usage_in_bytes'), '0')
  }

  get usageBytes(): number {
    return Number(this.read('memory.usage_in_bytes'))
  }

  /** Processes the kernel's OOM killer killed in this group. */
  get oomKills(): number {
    return Number(/oom_kill (\d+)/.exec(this.read('memory.oom_control'))?.[1] ?? 0)
  }

  /** Removes the group (its processes must have exited: waits for the kernel to agree). */
  async remove(): Promise<void> {
    for (const controller of ['memory', 'cpu'] as const) {
      const dir = this.dir(controller)
      if (!existsSync(dir)) continue
      await waitUntil(() => readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim() === '', `cgroup ${controller}/${this.name} to empty`, 10_000)
      rmdirSync(dir)
    }
  }
}
