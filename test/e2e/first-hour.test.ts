/**
 * A team's first hour: the README's placeholder snippet, taken from README.md by this test (so the README
 * cannot drift from what builds), as a page of a fresh app shaped like create-next-app's default (TypeScript
 * strict, App Router, next.config.ts) on the current Next, with the frontend package from its packed
 * tarball. Built twice: with create-next-app's default `cacheComponents: true` + `partialPrefetching: true`,
 * and in the classic model. Each time `next build` (which type-checks) passes with no sidecar running, and
 * `next start` with the sidecar renders the blur and the intrinsic size, the image comes from the sidecar,
 * and no placeholder warning is logged (there was one per render, though the blur was served).
 */
import { test, before, after, describe } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { freePort, REPO } from '../helpers/next-app.js'
import { startCli } from '../helpers/cli.js'
import { CORPUS, startUpstream, type UpstreamServer } from '../helpers/upstream-server.js'
import { installPackedFrontend, npm } from '../helpers/packages.js'
import { waitUntil } from '../helpers/wait.js'

const NEXT = (JSON.parse(readFileSync(join(REPO, 'node_modules/next/package.json'), 'utf8')) as { version: string }).version
// create-next-app's TypeScript template (its dependencies and tsconfig), without lint tooling.
const MANIFEST = {
  name: 'first-hour-app',
  private: true,
  scripts: { build: 'next build', start: 'next start' },
  dependencies: { next: NEXT, react: '^19.2.0', 'react-dom': '^19.2.0' },
  devDependencies: { typescript: '^5', '@types/node': '^20', '@types/react': '^19', '@types/react-dom': '^19' },
}
const TSCONFIG = {
  compilerOptions: {
    target: 'ES2017',
    lib: ['dom', 'dom.iterable', 'esnext'],
    allowJs: true,
    skipLibCheck: true,
    strict: true,
    noEmit: true,
    esModuleInterop: true,
    module: 'esnext',
    moduleResolution: 'bundler',
    resolveJsonModule: true,
    isolatedModules: true,
    jsx: 'react-jsx',
    incremental: true,
    plugins: [{ name: 'next' }],
    paths: { '@/*': ['./*'] },
  },
  include: ['next-env.d.ts', '**/*.ts', '**/*.tsx', '.next/types/**/*.ts', '.next/dev/types/**/*.ts', '**/*.mts'],
  exclude: ['node_modules'],
}
const LAYOUT = `import type { Metadata } from 'next'

export const metadata: Metadata = { title: 'First hour' }

export default function RootLayout({ children }: Readonly<{ children: React.ReactNode }>) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  )
}
`
/** next.config.ts as create-next-app writes it, with the README's two lines and the test's remote origin allowed. */
const config = (cacheComponents: boolean) => `import type { NextConfig } from 'next'
import { withImageSidecar } from 'next-image-sidecar-loader'

const remote = new URL(process.env.REMOTE_IMAGE ?? 'http://127.0.0.1/')

const nextConfig: NextConfig = {
  /* config options here */
${cacheComponents ? '  cacheComponents: true,\n  partialPrefetching: true,\n' : ''}  images: {
    remotePatterns: [{ protocol: 'http', hostname: remote.hostname, port: remote.port, pathname: remote.pathname }],
    // The remote image server of this test is on loopback.
    dangerouslyAllowLocalIP: true,
  },
}

export default withImageSidecar(nextConfig)
`
/** The remote image: EXIF orientation 6, so its displayed size (1600x2560) is not its stored one. */
const REMOTE = 'photo-jpeg/ladybird-exif-rotate-6.jpg'
const README_SRC = 'https://cms.example.com/a.jpg'

/** The README's placeholder page: the first tsx block of its "Blur placeholders" section. */
function readmeSnippet(): string {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Blur placeholders for any image'))
  const block = section.match(/```tsx\n([\s\S]*?)```/)?.[1]
  assert.ok(block, 'no tsx block in the README’s placeholder section')
  assert.ok(block.includes(README_SRC), `the README's snippet no longer shows ${README_SRC}`)
  return block
}

const CACHE = join(tmpdir(), `nis-first-hour-${createHash('sha256').update(JSON.stringify(MANIFEST)).digest('hex').slice(0, 12)}`)
const BASE = join(CACHE, 'base')
let upstream: UpstreamServer
const stops: Array<() => unknown> = []

before(() => {
  if (!existsSync(join(BASE, 'node_modules/.package-lock.json'))) {
    rmSync(BASE, { recursive: true, force: true })
    mkdirSync(BASE, { recursive: true })
    writeFileSync(join(BASE, 'package.json'), JSON.stringify(MANIFEST, null, 2))
    npm(BASE, ['install'])
  }
  installPackedFrontend(BASE)
})
before(async () => {
  upstream = await startUpstream()
})
after(async () => {
  for (const stop of stops.reverse()) await stop()
  await upstream?.close()
})

/** `next start` with its output kept, so the test can read what the Next server logged. */
async function startNextLogged(dir: string, env: Record<string, string>): Promise<{ url: string; log: () => string; stop: () => Promise<void> }> {
  const port = await freePort()
  const child = spawn(process.execPath, [join(dir, 'node_modules/next/dist/bin/next'), 'start', '-p', String(port), '-H', '127.0.0.1'], {
    cwd: dir,
    env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()))
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }
  stops.push(stop)
  const url = `http://127.0.0.1:${port}`
  await waitUntil(async () => {
    if (child.exitCode !== null) throw new Error(`next start exited with ${child.exitCode}:\n${output}`)
    return fetch(url, { signal: AbortSignal.timeout(2000) }).then(() => true, () => false)
  }, 'next start to answer', 60_000)
  return { url, log: () => output, stop }
}

const unescapeHtml = (value: string) => value.replace(/&quot;/g, '"').replace(/&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')

for (const cacheComponents of [true, false]) {
  describe(cacheComponents ? 'with cacheComponents and partialPrefetching (create-next-app’s default)' : 'in the classic rendering model', () => {
    const app = join(CACHE, cacheComponents ? 'app-cache-components' : 'app-classic')
    let buildLog = ''
    let remote = ''
    let sidecarPort = 0

    before(async () => {
      rmSync(app, { recursive: true, force: true })
      cpSync(BASE, app, { recursive: true, verbatimSymlinks: true })
      remote = `${upstream.url}/corpus/${REMOTE}`
      sidecarPort = await freePort()
      writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(TSCONFIG, null, 2))
      writeFileSync(join(app, 'next.config.ts'), config(cacheComponents))
      mkdirSync(join(app, 'app/photo'), { recursive: true })
      writeFileSync(join(app, 'app/layout.tsx'), LAYOUT)
      writeFileSync(join(app, 'app/page.tsx'), `export default function Home() {\n  return <main>home</main>\n}\n`)
      writeFileSync(join(app, 'app/photo/page.tsx'), readmeSnippet().replace(README_SRC, remote))
    })

    test('next build passes (types checked, strict) with no sidecar running, and logs no placeholder warning', () => {
      try {
        buildLog = execFileSync('npm', ['run', 'build'], {
          cwd: app,
          env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1', IMAGE_SIDECAR_URL: `http://127.0.0.1:${sidecarPort}`, REMOTE_IMAGE: remote },
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'pipe'],
          timeout: 600_000,
          killSignal: 'SIGKILL',
        })
      } catch (err) {
        const { stdout, stderr } = err as { stdout?: string; stderr?: string }
        assert.fail(`next build failed:\n${stdout}\n${stderr}`)
      }
      assert.match(buildLog, /Compiled successfully|Finished TypeScript|Linting and checking validity of types/)
      assert.doesNotMatch(buildLog, /next-image-sidecar-loader: no placeholder/)
    })

    test('next start renders the blur and the displayed size from the sidecar, the image loads from it, and nothing is logged as a failure', async () => {
      assert.ok(existsSync(join(app, '.next/BUILD_ID')), 'the build did not finish')
      const next = await startNextLogged(app, { REMOTE_IMAGE: remote })
      const sidecar = await startCli(['--port', String(sidecarPort), '--frontend', next.url, '--config', join(app, 'next.config.ts'), '--cache', 'memory://'], { REMOTE_IMAGE: remote })
      stops.push(() => sidecar.child.kill('SIGKILL'))

      for (let round = 0; round < 2; round++) {
        const res = await fetch(`${next.url}/photo`)
        assert.equal(res.status, 200)
        const html = await res.text()
        const tag = [...html.matchAll(/<img\b[^>]*>/g)].map(([t]) => t).find((t) => t.includes('/_next/image?url='))
        assert.ok(tag, `no optimized <img> in ${html.slice(0, 800)}`)
        const { width, height } = (await sharp(join(CORPUS, REMOTE)).metadata()).autoOrient
        assert.deepEqual([tag.match(/\bwidth="(\d+)"/)?.[1], tag.match(/\bheight="(\d+)"/)?.[1]], [String(width), String(height)], tag.slice(0, 300))
        const style = unescapeHtml(tag.match(/\bstyle="([^"]*)"/)?.[1] ?? '')
        assert.match(style, /feGaussianBlur[^"]*href='data:image\/jpeg;base64,[A-Za-z0-9+/=]+'/, style.slice(0, 300))
        const src = new URL(unescapeHtml(tag.match(/\bsrc="([^"]*)"/)?.[1] ?? ''))
        assert.equal(`${src.origin}${src.pathname}`, `http://127.0.0.1:${sidecarPort}/_next/image`)
        assert.equal(src.searchParams.get('url'), remote)
        const image = await fetch(src, { headers: { accept: 'image/webp,*/*' } })
        assert.equal(image.status, 200)
        assert.equal(image.headers.get('content-type'), 'image/webp')
        await image.arrayBuffer()
      }
      assert.doesNotMatch(next.log(), /next-image-sidecar-loader: no placeholder/)
    })
  })
}
