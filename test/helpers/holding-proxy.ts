import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http'
import { once } from 'node:events'

export interface HoldingProxy {
  url: string
  /** The paths (with query) of the requests held so far, in arrival order. */
  held: string[]
  /** Lets every held request through, and every later one. */
  release(): void
  close(): Promise<void>
}

/**
 * A loopback reverse proxy in front of `target` that holds the requests `hold` selects until
 * `release()`: a browser then sees a page whose images are still in flight for as long as the test
 * wants, with no timing involved. Everything else goes straight through.
 */
export async function startHoldingProxy(target: string, port: number, hold: (path: string) => boolean): Promise<HoldingProxy> {
  const upstream = new URL(target)
  const held: string[] = []
  let waiting: Array<() => void> = []
  let released = false

  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const out = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      },
    )
    out.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' })
      res.end(`proxy: ${err.message}`)
    })
    req.pipe(out)
  }

  const server = createServer((req, res) => {
    const path = req.url ?? '/'
    if (released || !hold(path)) return forward(req, res)
    held.push(path)
    waiting.push(() => forward(req, res))
  })
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${port}`,
    held,
    release: () => {
      released = true
      const pending = waiting
      waiting = []
      for (const go of pending) go()
    },
    close: async () => {
      server.closeAllConnections()
      server.close()
    },
  }
}
