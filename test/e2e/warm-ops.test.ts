/**
 * `next-image-sidecar warm` as an operator runs it before a deploy switches traffic: signed
 * sidecars, sitemap indexes and gzipped sitemaps, trailingSlash apps, broken links under public/,
 * and pages or targets that stall. The real CLI against real HTTP servers on 127.0.0.1.
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { CLI, startCli } from '../helpers/cli.js'
import { freePort } from '../helpers/next-app.js'
import { corpusFile } from '../helpers/upstream-server.js'
import { signImageParams } from '../../sidecar/server/signature.js'
import { createHmac } from 'node:crypto'

const KEY = 'warm-test-signing-key'
// One width, one quality, WebP: each image is 2 variants (WebP and the source-format fallback).
const dir = mkdtempSync(join(tmpdir(), 'nis-warm-ops-'))
const CONFIG = join(dir, 'next.config.mjs')
writeFileSync(CONFIG, `export default { trailingSlash: true, images: { deviceSizes: [640], imageSizes: [], qualities: [75] } }\n`)

type Route = (req: IncomingMessage, res: ServerResponse) => void
/** The frontend: pages, sitemaps and images, each a route the test defines. */
const routes = new Map<string, Route>()
let site: Server
let origin: string
const stalled = new Set<ServerResponse>()

const send = (body: string | Buffer, type: string, headers: Record<string, string> = {}): Route => (_req, res) => {
  res.writeHead(200, { 'content-type': type, ...headers })
  res.end(body)
}
const page = (html: string) => send(`<!DOCTYPE html><html><body>${html}</body></html>`, 'text/html; charset=utf-8')
const xml = (body: string) => send(`<?xml version="1.0" encoding="UTF-8"?>\n${body}`, 'application/xml')
const img = (src: string, w = 640, q = 75, s = '') => `<img src="/_next/image?url=${encodeURIComponent(src)}&amp;w=${w}&amp;q=${q}${s ? `&amp;s=${s}` : ''}">`

before(async () => {
  routes.set('/photos/gray.jpg', send(corpusFile('photo-jpeg/camera-gray.jpg'), 'image/jpeg'))
  routes.set('/photos/logo.png', send(corpusFile('tiny/logo-text-64.png'), 'image/png'))
  site = createServer((req, res) => {
    const route = routes.get(new URL(req.url ?? '/', 'http://x').pathname)
    if (route) return route(req, res)
    res.writeHead(404).end('not found')
  })
  site.listen(0, '127.0.0.1')
  await once(site, 'listening')
  origin = `http://127.0.0.1:${(site.address() as AddressInfo).port}`
})

after(() => {
  for (const res of stalled) res.destroy()
  site.closeAllConnections()
  site.close()
})

/** Runs `warm` to completion; resolves with its exit code and output (a non-zero exit is data here). */
function warm(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const base = ['warm', '--frontend', origin, '--config', CONFIG, '--next-version', '16', '--cache', 'memory://']
  const childEnv: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'error', ...env }
  if (!('IMAGE_SIDECAR_SIGNING_KEY' in env)) delete childEnv.IMAGE_SIDECAR_SIGNING_KEY
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...base, ...args], { env: childEnv }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr })
    })
  })
}

/** The placeholder summary line's counts (`--placeholders`). */
function placeholderSummary(stdout: string): { placeholders: number; warmed: number; fresh: number; failed: number } {
  const m = /warm: (\d+) placeholders: (\d+) warmed, (\d+) already fresh, (\d+) failed/.exec(stdout)
  assert.ok(m, stdout)
  return { placeholders: Number(m[1]), warmed: Number(m[2]), fresh: Number(m[3]), failed: Number(m[4]) }
}

/** Written independently of warm.ts: the contract's placeholder signature. */
const placeholderSignature = (key: string, url: string) => createHmac('sha256', key).update(`placeholder\n${url}`).digest('base64url')

/** What a sidecar answers now for a source's placeholder: status, X-Sidecar-Cache and the body. */
async function placeholderOf(sidecarUrl: string, src: string, key?: string): Promise<{ status: number; cache: string | null; body: string }> {
  const s = key ? `&s=${encodeURIComponent(placeholderSignature(key, src))}` : ''
  const res = await fetch(`${sidecarUrl}/_sidecar/placeholder?url=${encodeURIComponent(src)}${s}`)
  return { status: res.status, cache: res.headers.get('x-sidecar-cache'), body: await res.text() }
}

const sqliteCache = () => `sqlite://${join(mkdtempSync(join(tmpdir(), 'nis-warm-ph-')), 'cache.sqlite')}`

/** `warmed`, `fresh`, `failed` of the summary line. */
function summary(stdout: string): { variants: number; warmed: number; failed: number } {
  const m = /warm: (\d+) variants: (\d+) warmed, \d+ already fresh, (\d+) failed/.exec(stdout)
  assert.ok(m, stdout)
  return { variants: Number(m[1]), warmed: Number(m[2]), failed: Number(m[3]) }
}

describe('signing on', () => {
  test('the variants of a --urls image carry a valid signature', async () => {
    const urls = join(dir, 'signed-urls.txt')
    writeFileSync(urls, '/photos/gray.jpg\n')
    const run = await warm(['--urls', urls], { IMAGE_SIDECAR_SIGNING_KEY: KEY })
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
  })

  test('optimizer URLs found in a page keep working (the signature is recomputed)', async () => {
    routes.set('/signed/', page(img('/photos/gray.jpg', 640, 75, signImageParams(KEY, '/photos/gray.jpg', '640', '75'))))
    const run = await warm(['--pages', `${origin}/signed/`], { IMAGE_SIDECAR_SIGNING_KEY: KEY })
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
  })

  test('--target: a signed running sidecar accepts every variant', async () => {
    const sidecar = await startCli(['--frontend', origin, '--config', CONFIG, '--next-version', '16', '--cache', 'memory://'], { IMAGE_SIDECAR_SIGNING_KEY: KEY })
    try {
      const urls = join(dir, 'target-urls.txt')
      writeFileSync(urls, '/photos/logo.png\n')
      const run = await warm(['--urls', urls, '--target', sidecar.url], { IMAGE_SIDECAR_SIGNING_KEY: KEY })
      assert.equal(run.code, 0, run.stdout + run.stderr)
      assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
    } finally {
      sidecar.child.kill('SIGTERM')
    }
  })

  test('--target without the key here: the signatures found in pages are sent as found', async () => {
    const sidecar = await startCli(['--frontend', origin, '--config', CONFIG, '--next-version', '16', '--cache', 'memory://'], { IMAGE_SIDECAR_SIGNING_KEY: KEY })
    try {
      routes.set('/signed-keep/', page(img('/photos/logo.png', 640, 75, signImageParams(KEY, '/photos/logo.png', '640', '75'))))
      const run = await warm(['--pages', `${origin}/signed-keep/`, '--target', sidecar.url])
      assert.equal(run.code, 0, run.stdout + run.stderr)
      assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
    } finally {
      sidecar.child.kill('SIGTERM')
    }
  })
})

describe('sitemaps', () => {
  test('a sitemap index (next-sitemap’s default) is followed to its sitemaps and their pages', async () => {
    routes.set('/sitemap.xml', xml(`<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>${origin}/sitemap-0.xml</loc></sitemap></sitemapindex>`))
    routes.set('/sitemap-0.xml', xml(`<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>${origin}/a/</loc></url><url><loc><![CDATA[${origin}/b/]]></loc></url></urlset>`))
    routes.set('/a/', page(img('/photos/gray.jpg')))
    routes.set('/b/', page(img('/photos/logo.png')))
    const run = await warm(['--sitemap', `${origin}/sitemap.xml`])
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.deepEqual(summary(run.stdout), { variants: 4, warmed: 4, failed: 0 })
  })

  test('a sitemap naming the public host is read from the release it was fetched from (pages and child sitemaps)', async () => {
    // next-sitemap and app/sitemap.ts write absolute public URLs; here the "public host" is a trap.
    let trapped = 0
    const trap = createServer((_req, res) => {
      trapped++
      res.writeHead(500).end()
    })
    trap.listen(0, '127.0.0.2')
    await once(trap, 'listening')
    const publicHost = `http://127.0.0.2:${(trap.address() as AddressInfo).port}`
    try {
      routes.set('/sitemap-public.xml', xml(`<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>${publicHost}/sitemap-public-0.xml</loc></sitemap></sitemapindex>`))
      routes.set('/sitemap-public-0.xml', xml(`<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>${publicHost}/public-a/</loc></url></urlset>`))
      routes.set('/public-a/', page(img('/photos/gray.jpg')))
      const run = await warm(['--sitemap', `${origin}/sitemap-public.xml`])
      assert.equal(run.code, 0, run.stdout + run.stderr)
      assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
      assert.equal(trapped, 0, 'warm read from the host the sitemap names')
    } finally {
      trap.close()
    }
  })

  test('a gzipped sitemap (sitemap.xml.gz, no Content-Encoding) is read', async () => {
    const body = gzipSync(`<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>${origin}/a/</loc></url></urlset>`)
    routes.set('/sitemap-gz.xml.gz', send(body, 'application/gzip'))
    const run = await warm(['--sitemap', `${origin}/sitemap-gz.xml.gz`])
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
  })

  test('a sitemap that lists no pages fails the run, saying so', async () => {
    routes.set('/sitemap-empty.xml', xml('<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"></urlset>'))
    const run = await warm(['--sitemap', `${origin}/sitemap-empty.xml`])
    assert.equal(run.code, 1, run.stdout + run.stderr)
    assert.match(run.stderr, /sitemap-empty\.xml.*lists no pages/)
  })

  test('pages without any optimizer URL fail the run, saying so', async () => {
    routes.set('/plain/', page('<img src="/photos/gray.jpg">'))
    const run = await warm(['--pages', `${origin}/plain/`])
    assert.equal(run.code, 1, run.stdout + run.stderr)
    assert.match(run.stderr, /no \/_next\/image URL/)
  })
})

describe('trailingSlash apps', () => {
  test('the /_next/image/?… URLs Next emits are found and warmed', async () => {
    const src = '/photos/gray.jpg'
    routes.set('/slash/', page(`<img src="/_next/image/?url=${encodeURIComponent(src)}&amp;w=640&amp;q=75">`))
    const run = await warm(['--pages', `${origin}/slash/`])
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
  })

  test('a --urls line in that spelling is warmed as it is', async () => {
    const urls = join(dir, 'slash-urls.txt')
    writeFileSync(urls, '/_next/image/?url=%2Fphotos%2Flogo.png&w=640&q=75\n')
    const run = await warm(['--urls', urls])
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
  })
})

describe('broken links and stalls', () => {
  test('--from skips a dangling symlink and a symlink loop under public/, with a line each', async () => {
    const project = mkdtempSync(join(tmpdir(), 'nis-warm-from-'))
    mkdirSync(join(project, 'public/img'), { recursive: true })
    writeFileSync(join(project, 'public/img/a.jpg'), 'x')
    symlinkSync(join(project, 'public/gone.jpg'), join(project, 'public/dangling.jpg'))
    symlinkSync('loop.png', join(project, 'public/loop.png'))
    symlinkSync('..', join(project, 'public/img/up'))
    const run = await warm(['--from', project, '--dry-run'])
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.match(run.stdout, /^image\/webp +\/_next\/image\?url=%2Fimg%2Fa\.jpg&w=640&q=75$/m)
    assert.equal(run.stdout.trim().split('\n').length, 2, run.stdout)
    assert.match(run.stderr, /skipped .*dangling\.jpg/)
    assert.match(run.stderr, /skipped .*loop\.png/)
    assert.match(run.stderr, /skipped .*img\/up/)
  })

  test('a page that never answers fails the run after --timeout instead of hanging it', { timeout: 60_000 }, async () => {
    routes.set('/stall/headers/', (_req, res) => void stalled.add(res))
    const run = await warm(['--pages', `${origin}/stall/headers/`, '--timeout', '1000'])
    assert.equal(run.code, 1, run.stdout + run.stderr)
    assert.match(run.stderr, /stall\/headers\/.*no complete answer within 1000 ms/)
  })

  test('a page whose body stalls fails the run after --timeout', { timeout: 60_000 }, async () => {
    routes.set('/stall/body/', (_req, res) => {
      stalled.add(res)
      res.writeHead(200, { 'content-type': 'text/html' })
      res.write(`<html><body>${img('/photos/gray.jpg')}`)
    })
    const run = await warm(['--pages', `${origin}/stall/body/`, '--timeout', '1000'])
    assert.equal(run.code, 1, run.stdout + run.stderr)
    assert.match(run.stderr, /stall\/body\/.*no complete answer within 1000 ms/)
  })

  test('a page larger than the cap is refused, not read on', { timeout: 60_000 }, async () => {
    routes.set('/endless/', (req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      const chunk = Buffer.alloc(64 * 1024, '<p>x</p>')
      const pump = () => {
        while (res.write(chunk));
      }
      res.on('drain', pump)
      req.on('close', () => res.destroy())
      pump()
    })
    const run = await warm(['--pages', `${origin}/endless/`])
    assert.equal(run.code, 1, run.stdout + run.stderr)
    assert.match(run.stderr, /endless\/.*larger than \d+ bytes/)
  })

  test('a --target that never answers fails each variant after the deadline, and the run ends', { timeout: 60_000 }, async () => {
    const silent = createServer((_req, res) => void stalled.add(res))
    silent.listen(0, '127.0.0.1')
    await once(silent, 'listening')
    try {
      const urls = join(dir, 'silent-urls.txt')
      writeFileSync(urls, '/photos/logo.png\n')
      const run = await warm(['--urls', urls, '--target', `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, '--timeout', '1000'])
      assert.equal(run.code, 1, run.stdout + run.stderr)
      assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 0, failed: 2 })
      assert.match(run.stdout, /failed: .*no complete answer within \d+ ms/)
    } finally {
      silent.closeAllConnections()
      silent.close()
    }
  })

  test('a --target with a trailing slash is joined without a double slash', async () => {
    const sidecar = await startCli(['--frontend', origin, '--config', CONFIG, '--next-version', '16', '--cache', 'memory://'])
    try {
      const urls = join(dir, 'slash-target-urls.txt')
      writeFileSync(urls, '/photos/gray.jpg\n')
      const run = await warm(['--urls', urls, '--target', `${sidecar.url}/`])
      assert.equal(run.code, 0, run.stdout + run.stderr)
      assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
    } finally {
      sidecar.child.kill('SIGTERM')
    }
  })
})

describe('a store that keeps nothing', () => {
  test('warm into a cache store that does not answer fails (exit 1, the store named), instead of reporting variants warmed', async () => {
    const urls = join(dir, 'unreachable-store.txt')
    writeFileSync(urls, '/photos/gray.jpg\n')
    const run = await warm(['--urls', urls, '--cache', `redis://127.0.0.1:${await freePort()}`])
    assert.equal(run.code, 1, run.stdout + run.stderr)
    assert.match(run.stderr, /cache store redis:\/\/127\.0\.0\.1:\d+ .*(does not answer|could not store)/)
  })
})

describe('--placeholders', () => {
  test('a sidecar sharing the store then answers each source’s placeholder as a HIT; one request per source', async () => {
    const cache = sqliteCache()
    const urls = join(dir, 'placeholder-urls.txt')
    // gray.jpg twice (a page and a line can name one source): still one placeholder.
    writeFileSync(urls, '/photos/gray.jpg\n/photos/logo.png\n/_next/image?url=%2Fphotos%2Fgray.jpg&w=640&q=75\n')
    const run = await warm(['--urls', urls, '--placeholders', '--cache', cache])
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.deepEqual(summary(run.stdout), { variants: 4, warmed: 4, failed: 0 })
    assert.deepEqual(placeholderSummary(run.stdout), { placeholders: 2, warmed: 2, fresh: 0, failed: 0 })
    const sidecar = await startCli(['--frontend', origin, '--config', CONFIG, '--next-version', '16', '--cache', cache])
    try {
      for (const src of ['/photos/gray.jpg', '/photos/logo.png']) {
        const answer = await placeholderOf(sidecar.url, src)
        assert.equal(answer.status, 200, answer.body)
        assert.equal(answer.cache, 'HIT', src)
        assert.equal((JSON.parse(answer.body) as { src: string }).src, src)
      }
    } finally {
      sidecar.child.kill('SIGTERM')
    }
  })

  test('without it, nothing of the placeholder is warmed (MISS) and no placeholder line is printed', async () => {
    const cache = sqliteCache()
    const urls = join(dir, 'no-placeholder-urls.txt')
    writeFileSync(urls, '/photos/gray.jpg\n')
    const run = await warm(['--urls', urls, '--cache', cache])
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.doesNotMatch(run.stdout, /placeholders/)
    const sidecar = await startCli(['--frontend', origin, '--config', CONFIG, '--next-version', '16', '--cache', cache])
    try {
      const answer = await placeholderOf(sidecar.url, '/photos/gray.jpg')
      assert.equal(answer.status, 200, answer.body)
      assert.equal(answer.cache, 'MISS')
    } finally {
      sidecar.child.kill('SIGTERM')
    }
  })

  test('a second run finds the placeholders fresh', async () => {
    const cache = sqliteCache()
    const urls = join(dir, 'placeholder-again-urls.txt')
    writeFileSync(urls, '/photos/logo.png\n')
    assert.equal((await warm(['--urls', urls, '--placeholders', '--cache', cache])).code, 0)
    const again = await warm(['--urls', urls, '--placeholders', '--cache', cache])
    assert.equal(again.code, 0, again.stdout + again.stderr)
    assert.deepEqual(placeholderSummary(again.stdout), { placeholders: 1, warmed: 0, fresh: 1, failed: 0 })
  })

  test('--target, signing on: the running sidecar accepts the signed placeholders and then answers them as HITs', async () => {
    const sidecar = await startCli(['--frontend', origin, '--config', CONFIG, '--next-version', '16', '--cache', 'memory://'], { IMAGE_SIDECAR_SIGNING_KEY: KEY })
    try {
      const urls = join(dir, 'placeholder-target-urls.txt')
      writeFileSync(urls, '/photos/gray.jpg\n')
      const run = await warm(['--urls', urls, '--placeholders', '--target', sidecar.url], { IMAGE_SIDECAR_SIGNING_KEY: KEY })
      assert.equal(run.code, 0, run.stdout + run.stderr)
      assert.deepEqual(placeholderSummary(run.stdout), { placeholders: 1, warmed: 1, fresh: 0, failed: 0 })
      const answer = await placeholderOf(sidecar.url, '/photos/gray.jpg', KEY)
      assert.equal(answer.status, 200, answer.body)
      assert.equal(answer.cache, 'HIT')
    } finally {
      sidecar.child.kill('SIGTERM')
    }
  })

  test('--target without --placeholders leaves the running sidecar’s placeholder a MISS', async () => {
    const sidecar = await startCli(['--frontend', origin, '--config', CONFIG, '--next-version', '16', '--cache', 'memory://'])
    try {
      const urls = join(dir, 'no-placeholder-target-urls.txt')
      writeFileSync(urls, '/photos/gray.jpg\n')
      const run = await warm(['--urls', urls, '--target', sidecar.url])
      assert.equal(run.code, 0, run.stdout + run.stderr)
      const answer = await placeholderOf(sidecar.url, '/photos/gray.jpg')
      assert.equal(answer.status, 200, answer.body)
      assert.equal(answer.cache, 'MISS')
    } finally {
      sidecar.child.kill('SIGTERM')
    }
  })

  test('a source whose placeholder fails is reported with its reason, and the others are warmed', async () => {
    const urls = join(dir, 'placeholder-missing-urls.txt')
    writeFileSync(urls, '/photos/missing.jpg\n/photos/gray.jpg\n')
    const run = await warm(['--urls', urls, '--placeholders'])
    assert.equal(run.code, 1, run.stdout + run.stderr)
    assert.deepEqual(placeholderSummary(run.stdout), { placeholders: 2, warmed: 1, fresh: 0, failed: 1 })
    assert.match(run.stdout, /^ {2}failed: placeholder of \/photos\/missing\.jpg: 4\d\d \S/m)
  })

  test('a failed placeholder alone makes the exit code 1 (signed --target, no key here: the page’s signatures cover only the variants)', async () => {
    const sidecar = await startCli(['--frontend', origin, '--config', CONFIG, '--next-version', '16', '--cache', 'memory://'], { IMAGE_SIDECAR_SIGNING_KEY: KEY })
    try {
      routes.set('/signed-placeholder/', page(img('/photos/logo.png', 640, 75, signImageParams(KEY, '/photos/logo.png', '640', '75'))))
      const run = await warm(['--pages', `${origin}/signed-placeholder/`, '--placeholders', '--target', sidecar.url])
      assert.equal(run.code, 1, run.stdout + run.stderr)
      assert.deepEqual(summary(run.stdout), { variants: 2, warmed: 2, failed: 0 })
      assert.deepEqual(placeholderSummary(run.stdout), { placeholders: 1, warmed: 0, fresh: 0, failed: 1 })
      assert.match(run.stdout, /failed: placeholder of \/photos\/logo\.png: 403 "s" parameter \(signature\) is invalid \(placeholders are signed with IMAGE_SIDECAR_SIGNING_KEY/)
    } finally {
      sidecar.child.kill('SIGTERM')
    }
  })

  test('a --target that never answers fails each placeholder after the deadline too, and the run ends', { timeout: 60_000 }, async () => {
    const silent = createServer((_req, res) => void stalled.add(res))
    silent.listen(0, '127.0.0.1')
    await once(silent, 'listening')
    try {
      const urls = join(dir, 'silent-placeholder-urls.txt')
      writeFileSync(urls, '/photos/logo.png\n')
      const target = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`
      const run = await warm(['--urls', urls, '--placeholders', '--target', target, '--timeout', '1000', '--concurrency', '3'])
      assert.equal(run.code, 1, run.stdout + run.stderr)
      assert.deepEqual(placeholderSummary(run.stdout), { placeholders: 1, warmed: 0, fresh: 0, failed: 1 })
      assert.match(run.stdout, /failed: placeholder of \/photos\/logo\.png: no complete answer within \d+ ms/)
    } finally {
      silent.closeAllConnections()
      silent.close()
    }
  })

  test('--dry-run lists one placeholder per source after the variants', async () => {
    const urls = join(dir, 'placeholder-dry-urls.txt')
    writeFileSync(urls, '/photos/gray.jpg\n/photos/logo.png\n')
    const run = await warm(['--urls', urls, '--placeholders', '--dry-run'])
    assert.equal(run.code, 0, run.stdout + run.stderr)
    assert.match(run.stderr, /and 2 placeholders \(one per source\)/)
    const lines = run.stdout.trim().split('\n')
    assert.deepEqual(lines.slice(4), ['placeholder /_sidecar/placeholder?url=%2Fphotos%2Fgray.jpg', 'placeholder /_sidecar/placeholder?url=%2Fphotos%2Flogo.png'])
  })
})
