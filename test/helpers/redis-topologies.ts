import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from './next-app.js'
import { waitUntil } from './wait.js'

const run = promisify(execFile)
/** Bounded: a peer that accepts and never answers (not a Redis) must not hang the wait. */
const cli = async (port: number, ...args: string[]) => (await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5000 })).stdout

/** A redis-server process of a test's own, with its own directory. */
class Server {
  child: ChildProcess | undefined
  constructor(
    readonly port: number,
    private readonly args: string[],
    private readonly dir: string,
  ) {}
  async start(): Promise<void> {
    this.child = spawn('redis-server', [...this.args, '--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
    const child = this.child
    await waitUntil(async () => {
      if (child.exitCode !== null) throw new ServerExited(`redis-server on ${this.port} exited with ${child.exitCode}`)
      // Ours, not another server that holds the port (this one then exits, unable to bind it).
      return cli(this.port, 'INFO', 'server').then((out) => new RegExp(`^process_id:${child.pid}\\r?$`, 'm').test(out), () => false)
    }, `redis-server on ${this.port}`)
  }
  /** Holds every client's commands for `ms` (CLIENT PAUSE): a stalled server. */
  async pause(ms: number): Promise<void> {
    await cli(this.port, 'CLIENT', 'PAUSE', String(ms), 'ALL')
  }
  async kill(): Promise<void> {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited
  }
}

/**
 * A redis-server on a free port that no other server of the set uses. freePort() releases the port before
 * redis-server binds it, so two draws can meet, and a cluster node also binds its bus port (port + 10000),
 * which nothing reserves: a port taken or clashing is skipped, and a server that could not bind it (it
 * exits at start) is started again on another.
 */
async function startOnFreePort(taken: Set<number>, make: (port: number) => Server): Promise<Server> {
  const clashes = (port: number) => [port, port + 10_000, port - 10_000].some((p) => taken.has(p)) || port + 10_000 > 65_535
  for (let attempt = 1; ; attempt++) {
    let port = await freePort()
    while (clashes(port)) port = await freePort()
    const server = make(port)
    try {
      await server.start()
      taken.add(port)
      return server
    } catch (err) {
      if (attempt === 5 || !(err instanceof ServerExited)) throw err
    }
  }
}

class ServerExited extends Error {}

/** A Redis Cluster of three masters with a replica each (redis-cli --cluster create), nodes on free ports. */
export class LocalRedisCluster {
  private constructor(readonly nodes: Server[]) {}

  static async start(): Promise<LocalRedisCluster> {
    const nodes: Server[] = []
    const taken = new Set<number>()
    for (let i = 0; i < 6; i++) {
      nodes.push(
        await startOnFreePort(taken, (port) => {
          const dir = mkdtempSync(join(tmpdir(), `nis-cluster-node-${port}-`))
          return new Server(port, ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', '1000', '--cluster-replica-validity-factor', '0'], dir)
        }),
      )
    }
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'])
    const cluster = new LocalRedisCluster(nodes)
    await cluster.untilHealthy()
    return cluster
  }

  get url(): string {
    return `redis+cluster://${this.nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`
  }

  /** Every live node reports cluster_state:ok and sees three masters. */
  async untilHealthy(): Promise<void> {
    await waitUntil(async () => {
      for (const node of this.nodes.filter((n) => n.child?.exitCode === null && n.child.signalCode === null)) {
        const info = await cli(node.port, 'CLUSTER', 'INFO').catch(() => '')
        if (!info.includes('cluster_state:ok')) return false
      }
      return (await this.masterPorts()).length === 3
    }, 'the Redis Cluster to be healthy', 30_000, 100)
  }

  async masterPorts(): Promise<number[]> {
    const live = this.nodes.find((n) => n.child?.exitCode === null && n.child.signalCode === null)!
    const out = await cli(live.port, 'CLUSTER', 'NODES')
    return out
      .split('\n')
      .filter((line) => / master /.test(` ${line.split(' ')[2]?.replace(/,/g, ' ')} `) && !line.includes('fail'))
      .map((line) => Number(/:(\d+)@/.exec(line)![1]))
  }

  /** Kills a master (its replica takes over) and returns its port. */
  async killMaster(): Promise<number> {
    const [port] = await this.masterPorts()
    await this.nodes.find((n) => n.port === port)!.kill()
    return port!
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.kill()))
  }
}

/** A master, one replica and three Sentinels watching it (quorum 2, down after 1 s). */
export class LocalRedisSentinel {
  static readonly MASTER_NAME = 'nis-master'
  private constructor(
    readonly master: Server,
    readonly replica: Server,
    readonly sentinels: Server[],
  ) {}

  static async start(): Promise<LocalRedisSentinel> {
    const dir = mkdtempSync(join(tmpdir(), 'nis-sentinel-'))
    const taken = new Set<number>()
    const master = await startOnFreePort(taken, (port) => new Server(port, [], dir))
    const replica = await startOnFreePort(taken, (port) => new Server(port, ['--replicaof', '127.0.0.1', String(master.port)], dir))
    const sentinels: Server[] = []
    for (let i = 0; i < 3; i++) {
      sentinels.push(
        await startOnFreePort(taken, (port) => {
          const conf = join(dir, `sentinel-${port}.conf`)
          writeFileSync(conf, [`sentinel monitor ${LocalRedisSentinel.MASTER_NAME} 127.0.0.1 ${master.port} 2`, `sentinel down-after-milliseconds ${LocalRedisSentinel.MASTER_NAME} 1000`, `sentinel failover-timeout ${LocalRedisSentinel.MASTER_NAME} 3000`, ''].join('\n'))
          return new Server(port, [conf, '--sentinel'], dir)
        }),
      )
    }
    const set = new LocalRedisSentinel(master, replica, sentinels)
    // The Sentinels have found each other and the replica.
    await waitUntil(async () => {
      const out = await cli(sentinels[0]!.port, 'SENTINEL', 'MASTER', LocalRedisSentinel.MASTER_NAME).catch(() => '')
      const fields = out.split('\n')
      const value = (name: string) => Number(fields[fields.indexOf(name) + 1])
      return value('num-other-sentinels') === 2 && value('num-slaves') === 1
    }, 'the Sentinels to know each other and the replica', 30_000, 100)
    return set
  }

  get url(): string {
    return `redis+sentinel://${this.sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${LocalRedisSentinel.MASTER_NAME}`
  }

  /** The port Sentinel currently names as master. */
  async masterPort(): Promise<number> {
    const out = await cli(this.sentinels[0]!.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', LocalRedisSentinel.MASTER_NAME)
    return Number(out.trim().split('\n')[1])
  }

  async stop(): Promise<void> {
    await Promise.all([this.master, this.replica, ...this.sentinels].map((s) => s.kill()))
  }
}
