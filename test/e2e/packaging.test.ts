/**
 * What a team installs, as a user would: both packages packed with `npm pack`, the frontend tarball
 * installed into a fresh Next 16.4.6 app from the npm registry, then `next build` (plain and
 * standalone) and `next start` serving pages whose images point at the sidecar, which (the real CLI)
 * serves every one of them; a Server Component of that app rendering a remote image with the blur
 * placeholder and intrinsic size `getImagePlaceholder` gets from the sidecar of the server tarball,
 * and a Client Component importing that helper failing `next build`.
 * The fresh app's install is cached under the temp directory (keyed by its manifest); each run works
 * on a copy of it.
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, startNext, type RunningNext } from '../helpers/next-app.js'
import { startCli, stopChild } from '../helpers/cli.js'
import { CORPUS, startUpstream } from '../helpers/upstream-server.js'
import { FRONTEND_PACKAGE, npm, pack } from '../helpers/packages.js'
import { startPackedSidecar } from '../helpers/packed-sidecar.js'
import { waitUntil } from '../helpers/wait.js'
import sharp from 'sharp'

const NEXT = '16.4.6'
const MANIFEST = { name: 'fresh-next-app', private: true, type: 'module', dependencies: { next: NEXT, react: '^19.2.0', 'react-dom': '^19.2.0' } }
const CACHE = join(tmpdir(), `nis-fresh-next-${createHash('sha256').update(JSON.stringify(MANIFEST)).digest('hex').slice(0, 12)}`)
const BASE = join(CACHE, 'base')
const APP = join(CACHE, 'app')
/** What the frontend package may bring into an app: the server's stack must never be among it. */
const SERVER_STACK = /^(express|keyv|@keyv\/|redis|@redis\/|sqlite3|better-sqlite3|@opentelemetry\/|pino|tsx|esbuild|next-image-sidecar)$|^@keyv|^@redis|^@opentelemetry/
const env = { ...process.env, NEXT_TELEMETRY_DISABLED: '1' }

interface LockEntry {
  version?: string
  hasInstallScript?: boolean
  dependencies?: Record<string, string>
}
const lockOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'node_modules/.package-lock.json'), 'utf8')).packages as Record<string, LockEntry>
const nameOf = (path: string) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length)

function bytesOf(path: string): number {
  const stat = statSync(path)
  if (!stat.isDirectory()) return stat.size
  return readdirSync(path).reduce((sum, name) => sum + bytesOf(join(path, name)), 0)
}

/** The fresh app's `npm install` (from the registry), once per manifest. */
function freshApp(): void {
  if (existsSync(join(BASE, 'node_modules/.package-lock.json'))) return
  rmSync(BASE, { recursive: true, force: true })
  mkdirSync(BASE, { recursive: true })
  writeFileSync(join(BASE, 'package.json'), JSON.stringify(MANIFEST, null, 2))
  npm(BASE, ['install'])
}

const PAGE = `import Image from 'next/image'
import garden from './garden.jpg'

export default function Home() {
  return (
    <main>
      <Image id="public" src="/rocket.jpg" alt="rocket" width={640} height={427} priority />
      <Image id="static" src={garden} alt="garden" sizes="100vw" />
    </main>
  )
}
`
// A Server Component as the README shows it; rendered per request, so the sidecar is asked at run time, not during the build.
const PLACEHOLDER_PAGE = `import Image from 'next/image'
import { getImagePlaceholder } from '${FRONTEND_PACKAGE}/placeholder'

export const dynamic = 'force-dynamic'

export default async function Placeholder() {
  const photo = await getImagePlaceholder(process.env.REMOTE_IMAGE, { fallback: { width: 1200, height: 800 } })
  return (
    <main>
      <Image id="remote" src={photo} placeholder={photo.placeholder} alt="remote" sizes="100vw" />
    </main>
  )
}
`
// The Pages Router, where Next refuses server-only: the data function uses the unmarked entry.
const PAGES_PLACEHOLDER_PAGE = `import Image from 'next/image'
import { getImagePlaceholder } from '${FRONTEND_PACKAGE}/placeholder/pages'

export async function getServerSideProps() {
  return { props: { photo: await getImagePlaceholder(process.env.REMOTE_IMAGE, { fallback: { width: 1200, height: 800 } }) } }
}

export default function PagesPlaceholder({ photo }) {
  return <Image id="remote" src={photo} placeholder={photo.placeholder} alt="remote" sizes="100vw" />
}
`
// A prerendered Pages Router page with a plain <Image>: the loader runs at build time there.
const PAGES_PLAIN_PAGE = `import Image from 'next/image'

export default function PagesPlain() {
  return <Image src="/rocket.jpg" alt="rocket" width={640} height={427} />
}
`
// The mistake the entry's server-only import is there to stop: the helper in a browser bundle.
const CLIENT_IMPORT_PAGE = `import Photo from './photo'

export default function Page() {
  return <Photo />
}
`
const CLIENT_IMPORT_COMPONENT = `'use client'
import { getImagePlaceholder } from '${FRONTEND_PACKAGE}/placeholder'

export default function Photo() {
  return <button onClick={() => getImagePlaceholder('/rocket.jpg')}>placeholder</button>
}
`
const LAYOUT = `export default function RootLayout({ children }) {
  return <html lang="en"><body>{children}</body></html>
}
`
// As the README tells a user: import the helper, wrap the config. REMOTE_IMAGE: the remote image's
// origin (a loopback test server, hence dangerouslyAllowLocalIP) is allowed by remotePatterns.
const CONFIG = `import { withImageSidecar } from '${FRONTEND_PACKAGE}'

const remote = process.env.REMOTE_IMAGE ? new URL(process.env.REMOTE_IMAGE) : undefined

export default withImageSidecar({
  output: process.env.STANDALONE ? 'standalone' : undefined,
  distDir: process.env.DIST_DIR || '.next',
  images: {
    qualities: [60, 75],
    ...(remote ? { remotePatterns: [{ protocol: 'http', hostname: remote.hostname, port: remote.port, pathname: remote.pathname }], dangerouslyAllowLocalIP: true } : {}),
  },
})
`
/** The remote image: EXIF orientation 6, so its displayed size (1600x2560) is not its stored one. */
const REMOTE = 'photo-jpeg/ladybird-exif-rotate-6.jpg'

let added: Record<string, LockEntry>
let addedBytes: number
let serverFiles: string[]
let serverManifest: Record<string, any>
const stops: Array<() => Promise<void> | void> = []

function nextBuild(extra: Record<string, string>, args: string[] = []): void {
  execFileSync(process.execPath, [join(APP, 'node_modules/next/dist/bin/next'), 'build', ...args], { cwd: APP, env: { ...env, ...extra }, stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000, killSignal: 'SIGKILL' })
}

/** The standalone server (`node server.js`), with public/ and static/ beside it as Next's docs say. */
async function startStandalone(distDir: string): Promise<RunningNext> {
  const root = join(APP, distDir, 'standalone')
  cpSync(join(APP, 'public'), join(root, 'public'), { recursive: true })
  cpSync(join(APP, distDir, 'static'), join(root, distDir, 'static'), { recursive: true })
  const port = await freePort()
  const child: ChildProcess = spawn(process.execPath, ['server.js'], { cwd: root, env: { ...env, PORT: String(port), HOSTNAME: '127.0.0.1' }, stdio: ['ignore', 'ignore', 'inherit'] })
  const url = `http://127.0.0.1:${port}`
  await waitUntil(async () => {
    if (child.exitCode !== null) throw new Error(`standalone server exited with ${child.exitCode}`)
    return (await fetch(url).catch(() => undefined))?.ok === true
  }, 'the standalone server to answer', 60_000, 250)
  return {
    url,
    port,
    stop: async () => {
      await stopChild(child)
    },
  }
}

/** The optimizer URLs of the page's <img> elements (src and every srcset candidate). */
async function imageUrls(origin: string): Promise<string[]> {
  const html = await (await fetch(`${origin}/`)).text()
  const urls: string[] = []
  for (const [tag] of html.matchAll(/<img\b[^>]*>/g)) {
    for (const [, attr, value] of tag.matchAll(/\b(src|srcSet|srcset)="([^"]*)"/g)) {
      const decoded = value!.replace(/&amp;/g, '&')
      if (attr === 'src') urls.push(decoded)
      else urls.push(...decoded.split(', ').map((candidate) => candidate.trim().split(' ')[0]!))
    }
  }
  return urls
}

before(() => {
  freshApp()
  rmSync(APP, { recursive: true, force: true })
  cpSync(BASE, APP, { recursive: true, verbatimSymlinks: true })
  const before = lockOf(APP)
  npm(APP, ['install', pack(FRONTEND_PACKAGE)])
  const after = lockOf(APP)
  added = Object.fromEntries(Object.entries(after).filter(([path]) => !(path in before)))
  addedBytes = Object.keys(added).reduce((sum, path) => sum + bytesOf(join(APP, path)), 0)

  const files = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: join(import.meta.dirname, '../..'), encoding: 'utf8' })) as Array<{ files: Array<{ path: string }> }>
  serverFiles = files[0]!.files.map((f) => f.path)
  serverManifest = JSON.parse(execFileSync('tar', ['-xOzf', pack(), 'package/package.json'], { encoding: 'utf8' }))

  mkdirSync(join(APP, 'app/placeholder'), { recursive: true })
  mkdirSync(join(APP, 'public'), { recursive: true })
  writeFileSync(join(APP, 'app/page.jsx'), PAGE)
  writeFileSync(join(APP, 'app/placeholder/page.jsx'), PLACEHOLDER_PAGE)
  writeFileSync(join(APP, 'app/layout.jsx'), LAYOUT)
  writeFileSync(join(APP, 'next.config.mjs'), CONFIG)
  cpSync(join(CORPUS, 'photo-jpeg/rocket.jpg'), join(APP, 'public/rocket.jpg'))
  cpSync(join(CORPUS, 'photo-jpeg/garden.jpg'), join(APP, 'app/garden.jpg'))
})

after(async () => {
  for (const stop of stops.reverse()) await stop()
})

describe('installing the frontend package into a fresh Next 16.4.6 app', () => {
  // Itself, @noble/hashes and server-only (the marker that keeps getImagePlaceholder out of browser bundles).
  test('adds at most 3 packages and at most 1 MB', (t) => {
    t.diagnostic(`added ${Object.entries(added).map(([path, e]) => `${nameOf(path)}@${e.version}`).join(', ')}: ${addedBytes} bytes`)
    assert.ok(Object.keys(added).length <= 3, `added: ${Object.keys(added).join(', ')}`)
    assert.ok(addedBytes <= 1_000_000, `added ${addedBytes} bytes`)
    assert.ok(`node_modules/${FRONTEND_PACKAGE}` in added)
  })
  test('runs no install script', () => {
    assert.deepEqual(Object.entries(added).filter(([, entry]) => entry.hasInstallScript).map(([path]) => path), [])
  })
  test('brings nothing of the server (Express, keyv, Redis, SQLite, OpenTelemetry, pino, tsx, esbuild)', () => {
    assert.deepEqual(Object.keys(added).map(nameOf).filter((name) => SERVER_STACK.test(name)), [])
  })
})

describe('the server package', () => {
  test('ships the built CLI, the /loader and /config re-exports and nothing of the tests or of the frontend package’s sources', () => {
    for (const file of ['bin/next-image-sidecar', 'dist/sidecar/cli/main.js', 'dist/sidecar/index.js', 'dist/sidecar/loader.js', 'dist/sidecar/config.js']) assert.ok(serverFiles.includes(file), file)
    assert.deepEqual(serverFiles.filter((f) => /^(test|loader|packages|bench|example-next-app)\//.test(f)), [])
  })
  test('depends on the frontend package of the same version, and on nothing only development needs', () => {
    assert.equal(serverManifest.dependencies[FRONTEND_PACKAGE], JSON.parse(readFileSync(join(import.meta.dirname, '../../loader/package.json'), 'utf8')).version)
    assert.deepEqual(Object.keys(serverManifest.dependencies).filter((name) => /^(esbuild|typescript|@types\/|playwright)/.test(name)), [])
    assert.equal(serverManifest.scripts?.prepare, undefined)
  })
})

describe('next build and next start serve pages whose images point at the sidecar', () => {
  for (const mode of ['next start', 'standalone'] as const) {
    test(`${mode}: every <img> is an optimizer URL on the sidecar's origin, and the sidecar serves each`, async () => {
      const sidecarPort = await freePort()
      const origin = `http://127.0.0.1:${sidecarPort}`
      const distDir = mode === 'standalone' ? '.next-standalone' : '.next'
      nextBuild({ IMAGE_SIDECAR_URL: origin, DIST_DIR: distDir, ...(mode === 'standalone' ? { STANDALONE: '1' } : {}) })
      if (mode === 'standalone') {
        const traced = readdirSync(join(APP, distDir, 'standalone/node_modules'))
        assert.deepEqual(traced.filter((name) => SERVER_STACK.test(name)), [])
      }
      const next = mode === 'standalone' ? await startStandalone(distDir) : await startNext(APP, { DIST_DIR: distDir })
      stops.push(() => next.stop())
      const urls = await imageUrls(next.url)
      assert.ok(urls.length >= 4, `image URLs: ${urls.join(' ')}`)
      for (const url of urls) assert.ok(url.startsWith(`${origin}/_next/image?url=`), url)
      // The sidecar (the real CLI, reading this app's next.config) serves every one of them.
      const { child } = await startCli(['--port', String(sidecarPort), '--frontend', next.url, '--config', join(APP, 'next.config.mjs'), '--cache', 'memory://'])
      stops.push(() => {
        child.kill('SIGTERM')
      })
      for (const url of new Set(urls)) {
        const res = await fetch(url, { headers: { accept: 'image/webp,*/*' } })
        assert.equal(res.status, 200, url)
        assert.match(res.headers.get('content-type') ?? '', /^image\//, url)
        await res.arrayBuffer()
      }
      await stopChild(child)
    })
  }
})

/** Decodes the entities React writes in attribute values. */
const unescapeHtml = (value: string) => value.replace(/&quot;/g, '"').replace(/&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')

/** The remote <img> of a rendered page: the displayed size, Next's blur around a data:image/jpeg, and the image URL on the sidecar. */
async function assertBlurredRemote(html: string, remote: string, sidecarPort: number): Promise<void> {
  const tag = html.match(/<img\b[^>]*\bid="remote"[^>]*>/)?.[0]
  assert.ok(tag, `no <img id="remote"> in ${html.slice(0, 500)}`)
  // The size as displayed: EXIF orientation applied, as the sidecar reports it.
  const { width, height } = (await sharp(join(CORPUS, REMOTE)).metadata()).autoOrient
  assert.deepEqual([tag.match(/\bwidth="(\d+)"/)?.[1], tag.match(/\bheight="(\d+)"/)?.[1]], [String(width), String(height)], tag.slice(0, 300))
  const style = unescapeHtml(tag.match(/\bstyle="([^"]*)"/)?.[1] ?? '')
  assert.match(style, /background-image:url\("data:image\/svg\+xml;charset=utf-8,%3Csvg [^"]*feGaussianBlur[^"]*href='data:image\/jpeg;base64,[A-Za-z0-9+/=]+'/, style.slice(0, 300))
  // The image itself still goes to the sidecar's optimizer.
  const src = new URL(unescapeHtml(tag.match(/\bsrc="([^"]*)"/)?.[1] ?? ''))
  assert.equal(`${src.origin}${src.pathname}`, `http://127.0.0.1:${sidecarPort}/_next/image`)
  assert.equal(src.searchParams.get('url'), remote)
}

describe('getImagePlaceholder in the fresh app', () => {
  test('next start renders a Server Component’s remote <Image> with Next’s blur placeholder and its intrinsic width and height, from the sidecar of the server tarball', async () => {
    const upstream = await startUpstream()
    stops.push(() => upstream.close())
    const remote = `${upstream.url}/corpus/${REMOTE}`
    const sidecarPort = await freePort()
    const distDir = '.next-placeholder'
    nextBuild({ IMAGE_SIDECAR_URL: `http://127.0.0.1:${sidecarPort}`, DIST_DIR: distDir, REMOTE_IMAGE: remote })
    const next = await startNext(APP, { DIST_DIR: distDir, REMOTE_IMAGE: remote })
    stops.push(() => next.stop())
    const sidecar = await startPackedSidecar(['--port', String(sidecarPort), '--frontend', next.url, '--config', join(APP, 'next.config.mjs'), '--cache', 'memory://'], { REMOTE_IMAGE: remote })
    stops.push(() => sidecar.stop())

    const res = await fetch(`${next.url}/placeholder`)
    assert.equal(res.status, 200)
    await assertBlurredRemote(await res.text(), remote, sidecarPort)
  })

  // Built with webpack (Next 15.5's default builder): there the Pages Router once got an unbundled, asynchronous
  // @noble/hashes and the loader was no function at prerender.
  test('in the Pages Router (webpack), getServerSideProps with ./placeholder/pages renders the same beside a plain <Image> page, and the helper stays out of the browser bundle', async () => {
    const upstream = await startUpstream()
    stops.push(() => upstream.close())
    const remote = `${upstream.url}/corpus/${REMOTE}`
    const sidecarPort = await freePort()
    const distDir = '.next-pages-placeholder'
    mkdirSync(join(APP, 'pages'), { recursive: true })
    writeFileSync(join(APP, 'pages/pages-placeholder.jsx'), PAGES_PLACEHOLDER_PAGE)
    writeFileSync(join(APP, 'pages/pages-plain.jsx'), PAGES_PLAIN_PAGE)
    try {
      nextBuild({ IMAGE_SIDECAR_URL: `http://127.0.0.1:${sidecarPort}`, DIST_DIR: distDir, REMOTE_IMAGE: remote }, ['--webpack'])
    } finally {
      rmSync(join(APP, 'pages'), { recursive: true, force: true })
    }
    const next = await startNext(APP, { DIST_DIR: distDir, REMOTE_IMAGE: remote })
    stops.push(() => next.stop())
    const sidecar = await startPackedSidecar(['--port', String(sidecarPort), '--frontend', next.url, '--config', join(APP, 'next.config.mjs'), '--cache', 'memory://'], { REMOTE_IMAGE: remote })
    stops.push(() => sidecar.stop())

    const res = await fetch(`${next.url}/pages-placeholder`)
    assert.equal(res.status, 200)
    await assertBlurredRemote(await res.text(), remote, sidecarPort)
    const plain = await (await fetch(`${next.url}/pages-plain`)).text()
    assert.match(plain, new RegExp(`<img[^>]*src="http://127\\.0\\.0\\.1:${sidecarPort}/_next/image\\?url=%2Frocket\\.jpg`))
    // Next strips getServerSideProps, and what only it imports, from the page's browser code.
    const chunks = readdirSync(join(APP, distDir, 'static'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js'))
    assert.ok(chunks.length > 0)
    assert.deepEqual(chunks.filter((f) => readFileSync(join(APP, distDir, 'static', f), 'utf8').includes('_sidecar/placeholder')), [])
  })

  test('a Client Component importing next-image-sidecar-loader/placeholder fails next build (the entry is server only)', () => {
    const dir = join(APP, 'app/client-import')
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, 'page.jsx'), CLIENT_IMPORT_PAGE)
    writeFileSync(join(dir, 'photo.jsx'), CLIENT_IMPORT_COMPONENT)
    try {
      const build = spawnSync(process.execPath, [join(APP, 'node_modules/next/dist/bin/next'), 'build'], {
        cwd: APP,
        env: { ...env, DIST_DIR: '.next-client-import' },
        encoding: 'utf8',
        timeout: 180_000,
      })
      const output = `${build.stdout}${build.stderr}`
      assert.notEqual(build.status, 0, `next build succeeded:\n${output.slice(-2000)}`)
      assert.match(output, /'server-only' cannot be imported from a Client Component module/, output.slice(-2000))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
