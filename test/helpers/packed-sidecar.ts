import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stopChild } from './cli.js'
import { freePort, REPO } from './next-app.js'
import { pack } from './packages.js'
import { waitUntil } from './wait.js'

export interface PackedSidecar {
  url: string
  stop(): Promise<void>
}

/**
 * The sidecar as the server tarball ships it: `npm pack` of the server package unpacked and its own
 * command (`bin/next-image-sidecar`) run on 127.0.0.1, so what is tested is the packed dist/, not
 * the source tree. Its dependencies resolve from the repository's installed tree (an install from
 * the registry would take minutes and change nothing the tarball decides).
 */
export async function startPackedSidecar(args: string[], env: Record<string, string> = {}): Promise<PackedSidecar> {
  const dir = mkdtempSync(join(tmpdir(), 'nis-packed-server-'))
  execFileSync('tar', ['-xzf', pack(), '-C', dir])
  const root = join(dir, 'package')
  symlinkSync(join(REPO, 'node_modules'), join(root, 'node_modules'), 'dir')
  const port = args.includes('--port') ? Number(args[args.indexOf('--port') + 1]) : await freePort()
  const child = spawn(join(root, 'bin/next-image-sidecar'), ['--host', '127.0.0.1', ...(args.includes('--port') ? [] : ['--port', String(port)]), ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', process.env.DEBUG_CLI ? 'inherit' : 'ignore', 'inherit'],
  })
  const url = `http://127.0.0.1:${port}`
  await waitUntil(async () => {
    if (child.exitCode !== null) throw new Error(`the packed sidecar exited with ${child.exitCode}`)
    return (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) }).catch(() => undefined))?.ok === true
  }, 'the packed sidecar to answer /healthz', 30_000, 100)
  return {
    url,
    stop: async () => {
      await stopChild(child)
    },
  }
}
