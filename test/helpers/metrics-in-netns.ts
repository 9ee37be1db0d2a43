/**
 * Runs inside a private network namespace (see test/http/metrics-exposure.test.ts): 1.2.3.4 is assigned to
 * that namespace's own loopback interface, so a client with a non-loopback address exists while nothing
 * can leave the namespace. Starts the real CLI on 0.0.0.0 with the given arguments and prints one JSON line:
 * the status of GET /metrics from 127.0.0.1, from ::1 and from 1.2.3.4 (a client of another machine, as far
 * as the sidecar can tell), and of /healthz from 1.2.3.4.
 */
import { startCli } from './cli.js'
import { freePort } from './next-app.js'

const port = await freePort()
const args = process.argv.slice(2)
const { child } = await startCli(['--port', String(port), '--host', '::', '--cache', 'memory://', '--frontend', 'http://127.0.0.1:9', ...args], { LOG_LEVEL: 'silent' })
const status = async (url: string) => (await fetch(url)).status
const seen = {
  loopback4: await status(`http://127.0.0.1:${port}/metrics`),
  loopback6: await status(`http://[::1]:${port}/metrics`),
  remote: await status(`http://1.2.3.4:${port}/metrics`),
  remoteHealthz: await status(`http://1.2.3.4:${port}/healthz`),
}
child.kill('SIGKILL')
process.stdout.write(`${JSON.stringify(seen)}\n`)
process.exit(0)
