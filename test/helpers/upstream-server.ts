import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import { join, resolve } from 'node:path'
import { gzipSync, brotliCompressSync, deflateSync, deflateRawSync } from 'node:zlib'
import type { AddressInfo } from 'node:net'

/** ../shared/corpus, next to this repository. */
export const CORPUS = resolve(import.meta.dirname, '../../../shared/corpus')
export const corpusFile = (path: string) => readFileSync(join(CORPUS, path))

export interface UpstreamServer {
  url: string
  port: number
  /** Open connections right now. */
  connections(): Promise<number>
  /** Every request the server saw: method, url and headers. */
  requests: Array<{ method: string; url: string; headers: IncomingMessage['headers'] }>
  /** Responses of /mutable/<key>, changeable while the server runs. */
  mutable: Map<string, { status: number; body: Buffer; headers?: Record<string, string> }>
  close(): Promise<void>
}

/**
 * A real HTTP upstream for tests. Routes:
 *   /corpus/<path>                 the corpus file (Content-Type deliberately generic)
 *   /status/<code>                 answers that status with a short body
 *   /redirect/<n>?to=<url>         n redirects then `to` (Location relative to this server)
 *   /loop                          redirects to itself forever
 *   /empty                         200 with no body
 *   /encoded/<coding>/<path>       the corpus file with Content-Encoding gzip|br|deflate|deflate-raw|x-gzip
 *   /codings/<n>/<path>            the corpus file gzip-encoded n times, Content-Encoding listing n codings
 *   /headers/<path>?cc=&etag=      the corpus file with the given Cache-Control / ETag
 *   /hang                          never answers
 *   /slow/<ms>/<path>              the corpus file, its headers only after <ms>
 *   /trickle/<path>                headers at once, then one byte of the file every 100 ms
 *   /flaky/<n>/<path>              answers 503 n times, then the file
 *   /_next/static/media/<name>     a PNG, as Next serves statically imported images
 *   /mutable/<key>                 whatever the test put in `mutable` (404 otherwise)
 *   /fault/stall                   headers and half a PNG, then nothing more
 *   /fault/reset                   headers and half a PNG, then the connection is reset
 *   /fault/short                   Content-Length says 100000, 1000 bytes come, then the connection closes
 *   /fault/endless                 an image/png body that never ends
 */
export async function startUpstream(host = '127.0.0.1'): Promise<UpstreamServer> {
  const requests: UpstreamServer['requests'] = []
  const flakyCounts = new Map<string, number>()
  const mutable: UpstreamServer['mutable'] = new Map()
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers })
    // A request-target that is no URL path (`/\\host:port`) is a client error, as on any server.
    if (!URL.canParse(req.url ?? '/', 'http://x')) {
      res.writeHead(400).end('bad request-target')
      return
    }
    const url = new URL(req.url ?? '/', 'http://x')
    const parts = url.pathname.split('/').filter(Boolean)
    const send = (status: number, body: Buffer | string, headers: Record<string, string> = {}) => {
      res.writeHead(status, headers)
      res.end(body)
    }
    const file = (path: string) => {
      try {
        return corpusFile(decodeURIComponent(path))
      } catch {
        return undefined
      }
    }
    try {
      switch (parts[0]) {
        case 'corpus': {
          const body = file(parts.slice(1).join('/'))
          return body ? send(200, body, { 'content-type': 'application/octet-stream' }) : send(404, 'not found')
        }
        case 'status':
          return send(Number(parts[1]), 'status body')
        case 'redirect': {
          const n = Number(parts[1])
          const to = url.searchParams.get('to') ?? '/corpus/png/chelsea.png'
          return send(302, '', { location: n > 1 ? `/redirect/${n - 1}?to=${encodeURIComponent(to)}` : to })
        }
        case 'loop':
          return send(302, '', { location: '/loop' })
        case 'empty':
          return send(200, '')
        case 'encoded': {
          const coding = parts[1]!
          const body = file(parts.slice(2).join('/'))!
          const encoded = {
            gzip: gzipSync,
            'x-gzip': gzipSync,
            br: brotliCompressSync,
            deflate: deflateSync,
            'deflate-raw': deflateRawSync,
          }[coding]!(body)
          return send(200, encoded, { 'content-encoding': coding === 'deflate-raw' ? 'deflate' : coding })
        }
        case 'codings': {
          const n = Number(parts[1])
          let body = file(parts.slice(2).join('/'))!
          for (let i = 0; i < n; i++) body = gzipSync(body)
          return send(200, body, { 'content-encoding': Array(n).fill('gzip').join(', ') })
        }
        case 'headers': {
          const body = file(parts.slice(1).join('/'))!
          const headers: Record<string, string> = {}
          const cc = url.searchParams.get('cc')
          const etag = url.searchParams.get('etag')
          if (cc) headers['cache-control'] = cc
          if (etag) headers.etag = etag
          return send(200, body, headers)
        }
        case 'hang':
          return // never answer
        case 'slow': {
          const body = file(parts.slice(2).join('/'))!
          const timer = setTimeout(() => send(200, body, { 'content-type': 'image/png' }), Number(parts[1]))
          res.on('close', () => clearTimeout(timer))
          return
        }
        case 'trickle': {
          const body = file(parts.slice(1).join('/'))!
          res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(body.length) })
          let sent = 0
          const timer = setInterval(() => (sent < body.length ? res.write(body.subarray(sent, ++sent)) : res.end()), 100)
          res.on('close', () => clearInterval(timer))
          return
        }
        case 'fault': {
          const png = corpusFile('png/chelsea.png')
          if (parts[1] === 'stall') {
            res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(png.length) })
            res.write(png.subarray(0, png.length >> 1))
            return
          }
          if (parts[1] === 'reset') {
            res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(png.length) })
            res.write(png.subarray(0, png.length >> 1), () => setTimeout(() => req.socket.resetAndDestroy(), 20))
            return
          }
          if (parts[1] === 'short') {
            res.writeHead(200, { 'content-type': 'image/png', 'content-length': '100000' })
            res.write(png.subarray(0, 1000), () => setTimeout(() => req.socket.destroy(), 20))
            return
          }
          res.writeHead(200, { 'content-type': 'image/png' })
          const chunk = Buffer.alloc(64 * 1024, 7)
          const pump = () => {
            while (!res.destroyed && res.write(chunk)) {}
            if (!res.destroyed) res.once('drain', pump)
          }
          pump()
          return
        }
        case 'flaky': {
          const key = url.pathname
          const seen = flakyCounts.get(key) ?? 0
          flakyCounts.set(key, seen + 1)
          if (seen < Number(parts[1])) return send(503, 'try later')
          return send(200, file(parts.slice(2).join('/'))!)
        }
        case '_next':
          return send(200, corpusFile('png/chelsea.png'), { 'content-type': 'image/png', 'cache-control': 'public, max-age=315360000, immutable' })
        case 'mutable': {
          const entry = mutable.get(parts[1] ?? '')
          if (!entry) return send(404, 'not found')
          // Honour conditional requests like a static file server would.
          const etag = entry.headers?.etag
          if (etag && req.headers['if-none-match'] === etag) return send(304, '', { etag })
          return send(entry.status, entry.body, entry.headers)
        }
        default:
          return send(404, 'not found')
      }
    } catch (err) {
      send(500, String(err))
    }
  })
  server.listen(0, host)
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  return {
    url: `http://${host}:${port}`,
    port,
    requests,
    mutable,
    connections: () => new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
    close: async () => {
      server.closeAllConnections()
      server.close()
    },
  }
}
