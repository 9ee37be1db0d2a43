/**
 * Runs inside a private network namespace (see test/http/ssrf-netns.test.ts): 1.2.3.4 is assigned
 * to that namespace's own loopback interface, so a "public" upstream exists while nothing can leave
 * the namespace (it has no other interface). Prints one JSON line of observations.
 */
import request from 'supertest'
import { startUpstream } from './upstream-server.js'
import { testSidecar } from './sidecar.js'

const upstream = await startUpstream('1.2.3.4')
const port = upstream.port
let lookups = 0
const sidecar = testSidecar({
  frontend: upstream.url,
  nextConfig: { images: { remotePatterns: [{ hostname: 'public.test' }, { hostname: 'rebind.test' }] } },
  resolve: async (hostname) => {
    if (hostname === 'public.test') return [{ address: '1.2.3.4', family: 4 }]
    // rebind.test rebinds: public on the first answer, loopback on any later one.
    return lookups++ === 0 ? [{ address: '1.2.3.4', family: 4 }] : [{ address: '127.0.0.2', family: 4 }]
  },
})
const get = (url: string) => request(sidecar.app).get(`/_next/image?url=${encodeURIComponent(url)}&w=64&q=75`).set('Accept', 'image/webp')

const direct = await get(`http://rebind.test:${port}/corpus/png/chelsea.png`)
const lookupsAfterDirect = lookups
const redirected = await get(`http://public.test:${port}/redirect/1?to=${encodeURIComponent('http://127.0.0.2:1/x.png')}`)
const upstreamRequests = upstream.requests.map((r) => r.url)

process.stdout.write(
  `${JSON.stringify({
    direct: { status: direct.status, type: direct.headers['content-type'] },
    lookupsAfterDirect,
    redirected: { status: redirected.status, body: redirected.text },
    upstreamRequests,
  })}\n`,
)
await sidecar.close()
await upstream.close()
process.exit(0)
