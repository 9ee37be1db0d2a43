import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort, REPO } from './next-app.js'

export const CLI = join(REPO, 'dist/sidecar/cli/main.js')

/** The real CLI as a server process on 127.0.0.1 (`nodeArgs` go to node); resolves once /healthz answers. */
export async function startCli(args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<{ url: string; child: ChildProcess }> {
  const port = args.includes('--port') ? Number(args[args.indexOf('--port') + 1]) : await freePort()
  const child = spawn(process.execPath, [...nodeArgs, CLI, '--host', '127.0.0.1', ...(args.includes('--port') ? [] : ['--port', String(port)]), ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    // DEBUG_CLI=1 shows the sidecars' own log lines beside the test's output.
    stdio: ['ignore', process.env.DEBUG_CLI ? 'inherit' : 'ignore', 'inherit'],
  })
  const url = `http://127.0.0.1:${port}`
  // 30 s: two CLIs starting at once under --expose-gc on a loaded 2-core machine; a hang still fails.
  const giveUp = performance.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sidecar exited with ${child.exitCode}`)
    const up = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) })
      .then((res) => res.arrayBuffer().then(() => res.ok))
      .catch(() => false)
    if (up) return { url, child }
    if (performance.now() > giveUp) {
      child.kill('SIGKILL')
      throw new Error('sidecar did not start within 30 s')
    }
    await sleep(100)
  }
}

/**
 * Stops a child process with `signal` and waits for its exit, bounded: one that does not exit within `graceMs`
 * is killed and the call fails (a hang must fail, not stall the suite). A child that has already ended (it
 * crashed, or the OOM killer took it) resolves at once with how it ended — `once(child, 'exit')` taken after
 * the exit would wait forever.
 */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill(signal)
    let hung = false
    const timer = setTimeout(() => ((hung = true), child.kill('SIGKILL')), graceMs)
    await exited
    clearTimeout(timer)
    if (hung) throw new Error(`pid ${child.pid} did not exit within ${graceMs} ms of ${signal}`)
  }
  return { code: child.exitCode, signal: child.signalCode }
}

/**
 * Runs the CLI (a command such as `purge` or `warm`, or `serve` meant to stop by itself) to its exit, collecting its
 * output. One still running after `timeoutMs` is killed, and resolves with code null, which the caller's assertion
 * on the code reports.
 */
export async function runCliToExit(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const code = await exited
  clearTimeout(timer)
  return { code, stdout, stderr }
}
