import { ConfigError } from '../errors.js'

export interface RedisNode {
  host: string
  port: number
}

/** Where the shared cache lives: one Redis/Valkey server, a Redis Cluster, or a master found through Sentinel. */
export type RedisTarget =
  | { kind: 'single'; url: string }
  | { kind: 'cluster'; nodes: RedisNode[]; tls: boolean; username?: string; password?: string }
  | { kind: 'sentinel'; sentinels: RedisNode[]; masterName: string; database?: number; tls: boolean; username?: string; password?: string }

export const isRedisUrl = (url: string) => /^rediss?(\+cluster|\+sentinel)?:\/\//.test(url)

/**
 * Parses a cache URL (pure):
 * - `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`, `rediss://…` (TLS): one server;
 * - `redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]` (`rediss+cluster://`): seed nodes of a Cluster;
 * - `redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB]`: Sentinels, and the master's name.
 * Several hosts are not a valid WHATWG URL authority, so the authority is split by hand.
 */
export function parseRedisUrl(url: string): RedisTarget {
  const match = /^(rediss?)(\+cluster|\+sentinel)?:\/\/(.*)$/.exec(url)
  if (!match) throw new ConfigError(`--cache: "${redactUrl(url)}" is not a redis:// URL`)
  const [, scheme, topology, rest] = match
  if (!topology) {
    // node-redis would throw a bare TypeError carrying the whole URL, password included.
    if (!URL.canParse(url)) throw new ConfigError(`--cache: "${redactUrl(url)}" is not a valid URL (percent-encode reserved characters in the password)`)
    return { kind: 'single', url }
  }
  const tls = scheme === 'rediss'
  const slash = rest!.indexOf('/')
  const authority = slash >= 0 ? rest!.slice(0, slash) : rest!
  const path = slash >= 0 ? rest!.slice(slash + 1) : ''
  const at = authority.lastIndexOf('@')
  const credentials = at >= 0 ? authority.slice(0, at) : ''
  const hosts = at >= 0 ? authority.slice(at + 1) : authority
  const colon = credentials.indexOf(':')
  const username = colon > 0 ? decodeURIComponent(credentials.slice(0, colon)) : undefined
  const password = colon >= 0 ? decodeURIComponent(credentials.slice(colon + 1)) || undefined : credentials ? decodeURIComponent(credentials) : undefined
  const nodes = hosts.split(',').map((hostPort) => parseNode(hostPort, url))
  if (nodes.length === 0 || hosts === '') throw new ConfigError(`--cache: "${redactUrl(url)}" names no HOST:PORT`)
  const auth = { ...(username ? { username } : {}), ...(password ? { password } : {}) }
  if (topology === '+cluster') {
    if (path.replace(/\/+$/, '') !== '') throw new ConfigError(`--cache: a Redis Cluster has no database number or path, received "${redactUrl(url)}"`)
    return { kind: 'cluster', nodes, tls, ...auth }
  }
  const [masterName, db, ...extra] = path.split('/').filter(Boolean)
  if (!masterName || extra.length > 0) throw new ConfigError(`--cache: expected redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB], received "${redactUrl(url)}"`)
  if (db !== undefined && !/^\d+$/.test(db)) throw new ConfigError(`--cache: the database of "${redactUrl(url)}" must be a number, received "${db}"`)
  return { kind: 'sentinel', sentinels: nodes, masterName: decodeURIComponent(masterName), ...(db !== undefined ? { database: Number(db) } : {}), tls, ...auth }
}

function parseNode(hostPort: string, url: string): RedisNode {
  const match = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(hostPort.trim())
  if (!match) throw new ConfigError(`--cache: expected HOST:PORT in "${redactUrl(url)}", received "${redactUrl(hostPort)}"`)
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) }
}

/**
 * A URL (or something meant to be one) with its password hidden, for logs, errors and /readyz: everything
 * between the user name and the last `@` is masked, so a password holding `/`, `@` or `:` is hidden too.
 */
export function redactUrl(url: string): string {
  const at = url.lastIndexOf('@')
  if (at < 0) return url
  const scheme = /^[a-z][a-z0-9+.-]*:\/*/i.exec(url)?.[0] ?? ''
  const userinfo = url.slice(scheme.length, at)
  const colon = userinfo.indexOf(':')
  return `${scheme}${colon >= 0 ? userinfo.slice(0, colon + 1) : ':'}***${url.slice(at)}`
}

/** The Redis URL with its password hidden. */
export const redactRedisUrl = redactUrl
