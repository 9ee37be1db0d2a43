/**
 * The SSRF guard on a "public" upstream, safely: the test runs in a network namespace of its own
 * (unshare -n) whose only interface is loopback, with 1.2.3.4 assigned to it. A broken guard could
 * reach nothing outside that namespace.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { REPO } from '../helpers/next-app.js'

test('redirects are checked hop by hop and DNS answers are pinned for the connection', () => {
  const script = join(REPO, 'test/helpers/ssrf-in-netns.ts')
  const out = execFileSync(
    'unshare',
    ['-n', 'sh', '-c', `ip link set lo up && ip addr add 1.2.3.4/32 dev lo && exec "${process.execPath}" --import tsx "${script}"`],
    { cwd: REPO, encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'silent' }, timeout: 120_000, killSignal: 'SIGKILL' },
  )
  const seen = JSON.parse(out.trim().split('\n').pop()!)
  // The public hop is fetched and optimized: the guard lets public addresses through.
  assert.deepEqual(seen.direct, { status: 200, type: 'image/webp' })
  // One DNS answer per fetch, and the socket used it: the rebinding second answer was never asked for.
  assert.equal(seen.lookupsAfterDirect, 1)
  // A redirect from the public host to a loopback address is refused at that hop.
  assert.deepEqual(seen.redirected, { status: 400, body: '"url" parameter is not allowed' })
  assert.ok(seen.upstreamRequests.some((u: string) => u.startsWith('/redirect/1')))
})
