/**
 * `purge --target` against answers that are not a sidecar's purge result. Found by review: it followed
 * redirects, re-sending the purge (and its token) to whatever host a 307 named, and an HTML answer
 * crashed it with a stack trace (SyntaxError: Unexpected token '<'). And warm's summary of a failed
 * presigned source, which ends up in CI logs, without its signature.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCliToExit } from '../helpers/cli.js'
import { image } from '../helpers/image-url.js'

const TOKEN = 'purge-cli-test-admin-token-0123456789'

const runCli = (args: string[]) => runCliToExit(args, { IMAGE_SIDECAR_ADMIN_TOKEN: TOKEN }, 30_000)

/** A loopback server answering every request with `answer`, remembering what it was sent. */
async function serve(answer: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; seen: Array<{ url: string; authorization?: string }>; server: Server }> {
  const seen: Array<{ url: string; authorization?: string }> = []
  const server = createServer((req, res) => {
    seen.push({ url: req.url ?? '', authorization: req.headers.authorization })
    req.resume()
    req.on('end', () => answer(req, res))
  }).listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, server }
}

let elsewhere: Awaited<ReturnType<typeof serve>>
before(async () => {
  elsewhere = await serve((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"removed":0,"urls":[],"processes":0}'))
})
after(() => elsewhere.server.close())

for (const status of [301, 302, 307, 308]) {
  test(`a ${status} is not followed: the token goes nowhere else, exit 1 naming the redirect`, async () => {
    const target = await serve((_req, res) => res.writeHead(status, { location: `${elsewhere.url}/purge` }).end())
    try {
      const before = elsewhere.seen.length
      const run = await runCli(['purge', '/a.jpg', '--target', target.url])
      assert.equal(run.code, 1)
      assert.equal(elsewhere.seen.length, before, 'the purge was re-sent to the redirect target')
      assert.match(run.stderr, new RegExp(`answered ${status} .*${elsewhere.url.replace(/[.:/]/g, '\\$&')}/purge.*not followed`))
      assert.doesNotMatch(run.stderr, /\s+at |Error:/)
    } finally {
      target.server.close()
    }
  })
}

const notResults: Array<[string, number, Record<string, string>, string]> = [
  ['an HTML page', 200, { 'content-type': 'text/html' }, '<html><body>login</body></html>'],
  ['JSON of another shape', 200, { 'content-type': 'application/json' }, '{"ok":true}'],
  ['JSON cut short', 200, { 'content-type': 'application/json' }, '{"removed":1,"ur'],
  ['an HTML error page', 502, { 'content-type': 'text/html' }, '<html>Bad Gateway</html>'],
]
for (const [name, status, headers, body] of notResults) {
  test(`${name} (${status}) is a clear error, not a stack trace`, async () => {
    const target = await serve((_req, res) => res.writeHead(status, headers).end(body))
    try {
      const run = await runCli(['purge', '/a.jpg', '--target', target.url])
      assert.equal(run.code, 1)
      assert.match(run.stderr, /^purge: /)
      assert.doesNotMatch(run.stderr, /\s+at |SyntaxError|Unexpected token/)
      if (status === 200) assert.match(run.stderr, /not a purge result/)
      assert.equal(run.stdout, '')
    } finally {
      target.server.close()
    }
  })
}

test('warm\'s summary names a failed presigned source without its signature (found with issue 34.7)', async () => {
  const target = await serve((_req, res) => res.writeHead(500, { 'content-type': 'text/plain' }).end('broken'))
  const dir = mkdtempSync(join(tmpdir(), 'nis-warm-redact-'))
  try {
    const file = join(dir, 'urls.txt')
    writeFileSync(file, `${image('https://bucket.example/private/a.jpg?X-Amz-Date=20260101T000000Z&X-Amz-Signature=f00dfacecafe0123&X-Amz-Credential=AKIASECRET', 640)}\n`)
    const run = await runCli(['warm', '--urls', file, '--target', target.url, '--max-attempts', '1'])
    assert.equal(run.code, 1)
    assert.match(run.stdout, /failed: .*private%2Fa\.jpg.*X-Amz-Signature%3DREDACTED/)
    assert.doesNotMatch(run.stdout + run.stderr, /f00dfacecafe0123|AKIASECRET/)
  } finally {
    target.server.close()
  }
})
