/**
 * Who may read /metrics on the image port. Without --metrics-port the image port (often the public one)
 * answers /metrics to clients on this machine only; a client of another machine gets the 404 of a route that
 * does not exist. Run in a network namespace of its own (unshare -n) whose loopback also carries 1.2.3.4, so
 * a non-loopback client exists and nothing leaves the namespace.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { REPO } from '../helpers/next-app.js'

function inNetns(args: string[]): Record<string, number> {
  const script = join(REPO, 'test/helpers/metrics-in-netns.ts')
  const out = execFileSync(
    'unshare',
    ['-n', 'sh', '-c', `ip link set lo up && ip addr add 1.2.3.4/32 dev lo && exec "${process.execPath}" --import tsx "${script}" ${args.join(' ')}`],
    { cwd: REPO, encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'silent' }, timeout: 60_000 },
  )
  return JSON.parse(out.trim().split('\n').pop()!)
}

test('without --metrics-port, /metrics on the image port answers loopback clients (IPv4 and IPv6) and is a 404 for any other', () => {
  assert.deepEqual(inNetns([]), { loopback4: 200, loopback6: 200, remote: 404, remoteHealthz: 200 })
})

test('with --metrics-port, the image port has no /metrics for anyone', () => {
  const seen = inNetns(['--metrics-port', '19464'])
  assert.equal(seen.loopback4, 404)
  assert.equal(seen.remote, 404)
})
