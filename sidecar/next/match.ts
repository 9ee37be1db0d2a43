import picomatch from 'picomatch'

export interface LocalPattern {
  pathname?: string
  search?: string
}

export interface RemotePattern {
  protocol?: 'http' | 'https'
  hostname: string
  port?: string
  pathname?: string
  search?: string
}

// Patterns come from config and are matched on every request: compile each glob once.
const compiled = new Map<string, RegExp>()
function globRe(glob: string, dot: boolean): RegExp {
  const key = `${dot ? 'd' : 'n'}:${glob}`
  let re = compiled.get(key)
  if (!re) {
    re = picomatch.makeRe(glob, dot ? { dot: true } : {})
    compiled.set(key, re)
  }
  return re
}

/** Next's `matchLocalPattern` (shared/lib/match-local-pattern.ts). */
export function matchLocalPattern(pattern: LocalPattern, url: URL): boolean {
  if (pattern.search !== undefined && pattern.search !== url.search) return false
  return globRe(pattern.pathname ?? '**', true).test(url.pathname)
}

/** Whether a relative image URL (path and query) is allowed by `localPatterns`. */
export function hasLocalMatch(localPatterns: LocalPattern[] | undefined, urlPathAndQuery: string): boolean {
  if (!localPatterns) return true
  const url = new URL(urlPathAndQuery, 'http://n')
  return localPatterns.some((p) => matchLocalPattern(p, url))
}

/** Next's `matchRemotePattern` (shared/lib/match-remote-pattern.ts): hostname globs without `dot`. */
export function matchRemotePattern(pattern: RemotePattern, url: URL): boolean {
  if (pattern.protocol !== undefined && pattern.protocol.replace(/:$/, '') !== url.protocol.replace(/:$/, '')) return false
  if (pattern.port !== undefined && pattern.port !== url.port) return false
  if (!globRe(pattern.hostname, false).test(url.hostname)) return false
  if (pattern.search !== undefined && pattern.search !== url.search) return false
  return globRe(pattern.pathname ?? '**', true).test(url.pathname)
}

/** Whether an absolute image URL is allowed by `domains` or `remotePatterns`. */
export function hasRemoteMatch(domains: string[], remotePatterns: RemotePattern[], url: URL): boolean {
  return domains.some((d) => url.hostname === d) || remotePatterns.some((p) => matchRemotePattern(p, url))
}
