import { spawn, type ChildProcess } from 'node:child_process'
import { createConnection } from 'node:net'
import { freePort } from './next-app.js'
import { waitUntil } from './wait.js'

/** A unique key prefix per test, so runs never see each other's entries. */
export const uniquePrefix = (name: string) => `nis-test:${name}:${process.pid}:${Date.now()}:`

function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' })
    socket.once('connect', () => (socket.destroy(), resolve(true)))
    socket.once('error', () => resolve(false))
  })
}

/** A private redis-server on a free port that a test may kill and restart. */
export class PrivateRedis {
  private child: ChildProcess | undefined
  private constructor(
    readonly port: number,
    private readonly args: string[],
  ) {}

  /** `port`: a given one (e.g. one a store already tries to reach); `args`: more redis-server options. */
  static async start(options: { port?: number; args?: string[] } = {}): Promise<PrivateRedis> {
    const redis = new PrivateRedis(options.port ?? (await freePort()), options.args ?? [])
    await redis.restart()
    return redis
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  async restart(): Promise<void> {
    this.child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...this.args], { stdio: 'ignore' })
    const child = this.child
    await waitUntil(async () => {
      if (child.exitCode !== null) throw new Error(`redis-server on port ${this.port} exited with ${child.exitCode}`)
      return reachable(this.port)
    }, `redis-server on port ${this.port}`)
  }

  async kill(): Promise<void> {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited
  }
}
