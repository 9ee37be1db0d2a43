import { readFileSync } from 'node:fs'
import sharp from 'sharp'
import { optimizeImage, configureSharp } from '../sidecar/transform.js'
import { resolveNextConfig } from '../sidecar/images-config.js'
const [file, width, type] = process.argv.slice(2)
const buf = readFileSync('../shared/corpus/' + file)
const cfg = resolveNextConfig({}).sharp
configureSharp(cfg)
sharp.concurrency(Number(process.env.THREADS ?? 1))
const meta = await sharp(buf).metadata()
global.gc?.()
await new Promise((r) => setTimeout(r, 50))
const rss0 = process.memoryUsage().rss
const out = await optimizeImage(buf, type ?? 'image/webp', Number(width), 75, cfg)
const after = process.resourceUsage().maxRSS * 1024
const om = await sharp(out).metadata()
console.log(JSON.stringify({ file, fmt: meta.format, sw: meta.width, sh: meta.height, ch: meta.channels, interlaced: meta.isProgressive, orient: meta.orientation ?? 1, bytes: buf.length, type, ow: om.width, oh: om.height, outBytes: out.length, delta: after - rss0 }))
