/**
 * DNS rebinding (time of check / time of use) against both endpoints, run inside a private network
 * namespace (see test/http/advisories.test.ts): 1.2.3.4 is this namespace's own loopback address, so a
 * "public" upstream exists while nothing can leave. Each host answers the public address first and
 * 127.0.0.2 (where nothing listens) on any later lookup: a fetch that resolved again after its check
 * would connect there and fail. Prints one JSON line of observations.
 */
import request from 'supertest'
import { startUpstream } from './upstream-server.js'
import { testSidecar } from './sidecar.js'

const upstream = await startUpstream('1.2.3.4')
const lookups = new Map<string, number>()
const sidecar = testSidecar({
  frontend: upstream.url,
  nextConfig: { images: { remotePatterns: [{ hostname: '*.rebind.test' }] } },
  resolve: async (hostname) => {
    const seen = lookups.get(hostname) ?? 0
    lookups.set(hostname, seen + 1)
    return [{ address: seen === 0 ? '1.2.3.4' : '127.0.0.2', family: 4 }]
  },
})
const source = (host: string) => encodeURIComponent(`http://${host}.rebind.test:${upstream.port}/corpus/png/chelsea.png`)

const image = await request(sidecar.app).get(`/_next/image?url=${source('image')}&w=64&q=75`).set('Accept', 'image/webp')
const placeholder = await request(sidecar.app).get(`/_sidecar/placeholder?url=${source('placeholder')}`)

process.stdout.write(
  `${JSON.stringify({
    image: { status: image.status, type: image.headers['content-type'] },
    placeholder: { status: placeholder.status, width: placeholder.body?.width, height: placeholder.body?.height },
    lookups: Object.fromEntries(lookups),
    upstreamRequests: upstream.requests.length,
  })}\n`,
)
await sidecar.close()
await upstream.close()
process.exit(0)
