import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { freePort } from './next-app.js'

export interface TcpProxy {
  port: number
  url: string
  /** A partition: every connection through the proxy is cut and new ones are refused, until restore(). */
  cut(): Promise<void>
  restore(): Promise<void>
  close(): Promise<void>
}

/**
 * A loopback TCP proxy in front of `targetPort` that a test can cut and restore: a process behind it
 * loses its store (Redis) while the others keep theirs, as in a network partition.
 */
export async function startTcpProxy(targetPort: number, scheme = 'redis'): Promise<TcpProxy> {
  const port = await freePort()
  const sockets = new Set<Socket>()
  let server: Server | undefined
  const listen = async () => {
    server = createServer((client) => {
      const upstream = createConnection({ port: targetPort, host: '127.0.0.1' })
      for (const s of [client, upstream]) {
        sockets.add(s)
        s.on('close', () => sockets.delete(s))
        s.on('error', () => {
          client.destroy()
          upstream.destroy()
        })
      }
      client.pipe(upstream).pipe(client)
    })
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
  }
  const stop = async () => {
    const closing = server
    server = undefined
    if (!closing) return
    const closed = new Promise((resolve) => closing.close(resolve))
    for (const s of sockets) s.destroy()
    await closed
  }
  await listen()
  return { port, url: `${scheme}://127.0.0.1:${port}`, cut: stop, restore: listen, close: stop }
}
