/** `next-image-sidecar purge <src…> | --prefix P | --all`: removes cached variants, through a running sidecar or on the store. */
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { ConfigError } from '../errors.js'
import type { PurgeRequest } from '../cache/purge-request.js'
import { PURGE_FEED_MS } from '../server/purge.js'
import { HELP, PURGE, sidecarOptions } from './flags.js'

const loadApp = () => import('../server/app.js')

/** What a purge printed: the count on stderr, the optimizer URLs on stdout (one a line, for a CDN purge). */
function report(result: { removed: number; urls: string[]; processes: number }): void {
  process.stderr.write(`purge: removed ${result.removed} cached variants (${result.urls.length} optimizer URLs); ${result.processes} other processes dropped their in-memory copies\n`)
  for (const url of result.urls) process.stdout.write(`${url}\n`)
}

export async function purge(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: PURGE, strict: true, allowPositionals: true })
  if (values.help) return void process.stdout.write(HELP), 0
  const chosen = [positionals.length > 0, values.prefix !== undefined, values.all === true].filter(Boolean).length
  if (chosen !== 1) throw new ConfigError('purge: name sources (purge /images/hero.jpg …), or --prefix P, or --all — exactly one of them')
  const request: PurgeRequest = positionals.length > 0 ? { sources: positionals } : values.prefix !== undefined ? { prefix: values.prefix } : { all: true }
  if ((values.target === undefined) === (values.cache === undefined && process.env.IMAGE_CACHE_URL === undefined)) {
    throw new ConfigError('purge: give --target URL (a running sidecar) or --cache URL (the store itself), one of them')
  }
  return values.target !== undefined ? purgeThrough(values.target, values['admin-token'] ?? process.env.IMAGE_SIDECAR_ADMIN_TOKEN, request) : purgeStore(values, request)
}

async function purgeThrough(target: string, token: string | undefined, request: PurgeRequest): Promise<number> {
  if (!token) throw new ConfigError('purge --target: the sidecar\'s admin token is needed (IMAGE_SIDECAR_ADMIN_TOKEN, or --admin-token)')
  const url = new URL('purge', target.endsWith('/') ? target : `${target}/`)
  let res: Response
  try {
    res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(request), signal: AbortSignal.timeout(60_000) })
  } catch (err) {
    process.stderr.write(`purge: could not reach ${url.href}: ${(err as Error).message}\n`)
    return 1
  }
  if (res.status === 404) {
    process.stderr.write(`purge: ${url.href} answered 404: the sidecar has no /purge unless started with an admin token (IMAGE_SIDECAR_ADMIN_TOKEN or --admin-token); with --metrics-port it is on that port\n`)
    return 1
  }
  if (res.status === 401) {
    process.stderr.write(`purge: ${url.href} refused the admin token (401)\n`)
    return 1
  }
  if (!res.ok) {
    process.stderr.write(`purge: ${url.href} answered ${res.status}: ${(await res.text()).slice(0, 500)}\n`)
    return 1
  }
  report((await res.json()) as { removed: number; urls: string[]; processes: number })
  return 0
}

/**
 * Straight on the store, as one more process sharing it: Redis tells the replicas (pub/sub, acknowledged);
 * sidecars on a SQLite file read its purge log every PURGE_FEED_MS, so this waits that long before it returns.
 */
async function purgeStore(values: Record<string, unknown>, request: PurgeRequest): Promise<number> {
  const { options } = await sidecarOptions(values as Parameters<typeof sidecarOptions>[0])
  const { createSidecar } = await loadApp()
  const sidecar = createSidecar({ ...options, hotCacheSize: 0, logger: pino({ level: process.env.LOG_LEVEL ?? 'warn' }) })
  try {
    try {
      await sidecar.store.ping()
    } catch (err) {
      process.stderr.write(`purge: could not reach the cache store ${sidecar.store.name}: ${(err as Error).message}\n`)
      return 1
    }
    const result = await sidecar.purge(request)
    if (sidecar.store.name.startsWith('sqlite://')) {
      await sleep(PURGE_FEED_MS * 1.5)
      process.stderr.write('purge: sidecars on this host using the file have dropped their in-memory copies by now (they read its purge log each second); on other hosts, use --target\n')
    }
    report(result)
    return 0
  } catch (err) {
    process.stderr.write(`purge: failed on ${sidecar.store.name}: ${(err as Error).message}\n`)
    return 1
  } finally {
    await sidecar.close()
  }
}
