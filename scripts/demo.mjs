#!/usr/bin/env node
// `npm run demo`: builds the example app against the sidecar, then runs both in production
// mode: the app on :3000 (`next start`), the sidecar on :3001 with its embedded SQLite cache.
// Ctrl-C stops both.
import { spawn, execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const app = join(root, 'example-next-app')
const appPort = process.env.APP_PORT ?? '3000'
const sidecarPort = process.env.SIDECAR_PORT ?? '3001'
const sidecarUrl = process.env.IMAGE_SIDECAR_URL ?? `http://localhost:${sidecarPort}`
const env = { ...process.env, IMAGE_SIDECAR_URL: sidecarUrl, NEXT_TELEMETRY_DISABLED: '1' }

console.log(`Building the example app with IMAGE_SIDECAR_URL=${sidecarUrl} ...`)
execFileSync('npm', ['run', 'build'], { cwd: app, env, stdio: 'inherit' })

const children = [
  spawn('npx', ['next', 'start', '-p', appPort], { cwd: app, env, stdio: 'inherit' }),
  // The package's command: it picks the allocator (jemalloc when installed) before starting the CLI.
  spawn(join(root, 'bin/next-image-sidecar'), ['--port', sidecarPort, '--frontend', `http://127.0.0.1:${appPort}`, '--config', join(app, 'next.config.mjs')], {
    cwd: root,
    env,
    stdio: 'inherit',
  }),
]
console.log(`\nExample app: http://localhost:${appPort}   sidecar: ${sidecarUrl}   (Ctrl-C stops both)\n`)

const stop = () => children.forEach((child) => child.kill('SIGTERM'))
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
for (const child of children) child.on('exit', (code) => { stop(); process.exitCode = code ?? 0 })
