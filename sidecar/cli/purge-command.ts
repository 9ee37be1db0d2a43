/** `next-image-sidecar purge <src…> | --prefix P | --all`: removes cached variants, through a running sidecar or on the store. */
import { pino } from 'pino'
import { ConfigError } from '../errors.js'
import type { PurgeRequest } from '../cache/purge-request.js'
import type { SidecarOptions } from '../server/options.js'
import { given, HELP, logLevel, parseFlags, sidecarOptions, valueOf } from './flags.js'

const loadApp = () => import('../server/app.js')

/**
 * What a purge printed: the count on stderr, the optimizer URLs on stdout (one a line, for a CDN purge).
 * The exit code: 0, or 2 when processes known to keep in-memory copies did not confirm in time (the
 * store is purged; they drop their copies when they next read its purge log).
 */
function report(result: PurgeAnswer): number {
  process.stderr.write(`purge: removed ${result.removed} cached variants (${result.urls.length} optimizer URLs); ${result.processes} other processes dropped their in-memory copies\n`)
  if (result.missed > 0) {
    process.stderr.write(`purge: ${result.missed} other processes that keep in-memory copies did not confirm within the bound (cut off from the store, or hung): they may serve old bytes until they read the purge log again; check them and purge again\n`)
  }
  for (const url of result.urls) process.stdout.write(`${url}\n`)
  return result.missed > 0 ? 2 : 0
}

type PurgeAnswer = { removed: number; urls: string[]; processes: number; missed: number }

/**
 * What `purge` reads from its flags and the environment, checked; `help` when asked for --help. The
 * store's options are read (and checked) only for a purge on the store.
 */
export async function purgeSettings(argv: string[], env: NodeJS.ProcessEnv = process.env) {
  const { values, positionals } = parseFlags('purge', argv, true)
  if (values.help) return { help: true as const }
  const chosen = [positionals.length > 0, values.prefix !== undefined, values.all === true].filter(Boolean).length
  if (chosen !== 1) throw new ConfigError('purge: name sources (purge /images/hero.jpg …), or --prefix P, or --all — exactly one of them')
  const request: PurgeRequest = positionals.length > 0 ? { sources: positionals } : values.prefix !== undefined ? { prefix: values.prefix } : { all: true }
  if ((values.target === undefined) === !given('cache', values, env)) {
    throw new ConfigError('purge: give --target URL (a running sidecar) or --cache URL (the store itself), one of them')
  }
  const target = values.target !== undefined ? { url: values.target, token: valueOf('adminToken', values, env) } : undefined
  return { help: false as const, request, target, storeOptions: async () => (await sidecarOptions(values, env)).options }
}

export async function purge(argv: string[]): Promise<number> {
  const settings = await purgeSettings(argv)
  if (settings.help) return void process.stdout.write(HELP), 0
  const { request, target, storeOptions } = settings
  return target !== undefined ? purgeThrough(target.url, target.token, request) : purgeStore(await storeOptions(), request)
}

async function purgeThrough(target: string, token: string | undefined, request: PurgeRequest): Promise<number> {
  if (!token) throw new ConfigError('purge --target: the sidecar\'s admin token is needed (IMAGE_SIDECAR_ADMIN_TOKEN, or --admin-token)')
  const url = new URL('purge', target.endsWith('/') ? target : `${target}/`)
  let res: Response
  try {
    // Never follow a redirect: it would send the purge and its token to whatever host the answer names.
    res = await fetch(url, { method: 'POST', redirect: 'manual', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(request), signal: AbortSignal.timeout(60_000) })
  } catch (err) {
    process.stderr.write(`purge: could not reach ${url.href}: ${(err as Error).message}\n`)
    return 1
  }
  if (res.status >= 300 && res.status < 400) {
    const location = res.headers.get('location')
    process.stderr.write(`purge: ${url.href} answered ${res.status} (a redirect${location ? ` to ${oneLine(location)}` : ''}), not followed: the admin token goes only to --target; give the sidecar's own URL\n`)
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
  if (res.status === 429) {
    process.stderr.write(`purge: ${url.href} is backing off after repeated wrong tokens (429); retry after ${res.headers.get('retry-after') ?? 'a while'} s\n`)
    return 1
  }
  const text = await res.text().catch((err: unknown) => `(the answer broke off: ${(err as Error).message})`)
  if (!res.ok) {
    process.stderr.write(`purge: ${url.href} answered ${res.status}: ${oneLine(text).slice(0, 500)}\n`)
    return 1
  }
  const result = purgeResultOf(text)
  if (!result) {
    process.stderr.write(`purge: ${url.href} answered ${res.status} with ${res.headers.get('content-type') ?? 'no content type'}, not a purge result ({"removed", "urls", "processes"}): is --target a next-image-sidecar? It began: ${oneLine(text).slice(0, 200)}\n`)
    return 1
  }
  return report(result)
}

/** An answer's text on one line, for a message. */
const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim()

/** Pure: a sidecar's purge result from an answer's body, or undefined for anything else. */
export function purgeResultOf(text: string): PurgeAnswer | undefined {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return undefined
  }
  const { removed, urls, processes, missed } = (body ?? {}) as Record<string, unknown>
  // `missed` is absent from a sidecar older than it: nothing known missed.
  const valid = Number.isInteger(removed) && Array.isArray(urls) && urls.every((u) => typeof u === 'string') && Number.isInteger(processes) && (missed === undefined || Number.isInteger(missed))
  return valid ? { removed: removed as number, urls: urls as string[], processes: processes as number, missed: (missed as number | undefined) ?? 0 } : undefined
}

/**
 * Straight on the store, as one more process sharing it: Redis tells the replicas (pub/sub, acknowledged);
 * sidecars on a SQLite file read its purge log every PURGE_FEED_MS and record how far they are, and this
 * returns once each of them is past the purge (see createPurger).
 */
async function purgeStore(options: SidecarOptions, request: PurgeRequest): Promise<number> {
  const { createSidecar } = await loadApp()
  // cacheMaintenance: this process's bound is not the server's; evicting to it removed unrelated entries.
  const sidecar = createSidecar({ ...options, hotCacheSize: 0, cacheMaintenance: true, logger: pino({ level: logLevel('warn') }) })
  try {
    try {
      await sidecar.store.ping()
    } catch (err) {
      process.stderr.write(`purge: could not reach the cache store ${sidecar.store.name}: ${(err as Error).message}\n`)
      return 1
    }
    return report(await sidecar.purge(request))
  } catch (err) {
    process.stderr.write(`purge: failed on ${sidecar.store.name}: ${(err as Error).message}\n`)
    return 1
  } finally {
    await sidecar.close()
  }
}
