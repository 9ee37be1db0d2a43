import { request as httpRequest } from 'node:http'
import { image } from './image-url.js'

/** One request on a connection of its own, so a cluster's primary hands them to every worker in turn. */
export function fresh(url: string, accept: string): Promise<{ status: number; cache: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false, headers: { accept, connection: 'close' } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, cache: String(res.headers['x-nextjs-cache']), body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.end()
  })
}

/** Four variants of a source: two widths, each as WebP and as the source's JPEG. */
export const variants = (src: string) => [640, 1080].flatMap((w) => ['image/webp', 'image/jpeg'].map((accept) => ({ path: image(src, w), accept })))
