#!/usr/bin/env node
// `npm run demo`: builds the example app against the sidecar, then runs both in production
// mode: the app on :3000 (`next start`), the sidecar on :3001 with its embedded SQLite cache.
// Ctrl-C (or SIGTERM) stops both, with everything they started; when either exits, the other is
// stopped too, and the demo exits with the code of the one that ended first.
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { supervise } from './process-tree.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const app = join(root, 'example-next-app')
const appPort = process.env.APP_PORT ?? '3000'
const sidecarPort = process.env.SIDECAR_PORT ?? '3001'
const sidecarUrl = process.env.IMAGE_SIDECAR_URL ?? `http://localhost:${sidecarPort}`
const env = { ...process.env, IMAGE_SIDECAR_URL: sidecarUrl, NEXT_TELEMETRY_DISABLED: '1' }

console.log(`Building the example app with IMAGE_SIDECAR_URL=${sidecarUrl} ...`)
// Supervised too, so a Ctrl-C during the build stops the build.
const build = await supervise([{ name: 'build', command: 'npm', args: ['run', 'build'], options: { cwd: app, env } }])
if (build.code !== 0 || build.signal) process.exit(build.code)

const { code } = await supervise(
  [
    { name: 'next start', command: 'npx', args: ['next', 'start', '-p', appPort], options: { cwd: app, env } },
    // The package's command: it picks the allocator (jemalloc when installed) before starting the CLI.
    {
      name: 'sidecar',
      command: join(root, 'bin/next-image-sidecar'),
      args: ['--port', sidecarPort, '--frontend', `http://127.0.0.1:${appPort}`, '--config', join(app, 'next.config.mjs')],
      options: { cwd: root, env },
    },
  ],
  { onStart: () => console.log(`\nExample app: http://localhost:${appPort}   sidecar: ${sidecarUrl}   (Ctrl-C stops both)\n`) },
)
process.exit(code)
