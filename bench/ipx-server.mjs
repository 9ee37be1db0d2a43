// unjs/ipx 3 as a Nuxt/Nitro deployment runs it: its Node server over the app's public directory
// (filesystem storage), sharp-based, no result cache. `node bench/ipx-server.mjs <dir> <port>`;
// URLs as `/w_1080,f_webp,q_75/bench/photo.jpg`.
import { createServer } from 'node:http'
import { createIPX, createIPXNodeServer, ipxFSStorage } from 'ipx'

const [dir, port] = process.argv.slice(2)
const ipx = createIPX({ storage: ipxFSStorage({ dir }) })
createServer(createIPXNodeServer(ipx)).listen(Number(port), '127.0.0.1')
