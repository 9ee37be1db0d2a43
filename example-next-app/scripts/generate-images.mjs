// Generates the example's images (so the repository ships no binaries): photos-like gradients
// in public/photos and an image in app/ that the home page imports statically.
import sharp from 'sharp'
import { mkdirSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const images = [
  { path: 'public/photos/dawn.jpg', width: 2400, height: 1600, colors: ['#ff9a8b', '#ff6a88', '#ff99ac'], label: 'Dawn' },
  { path: 'public/photos/ocean.jpg', width: 2000, height: 1333, colors: ['#2193b0', '#6dd5ed', '#0b486b'], label: 'Ocean' },
  { path: 'public/photos/forest.jpg', width: 1600, height: 1200, colors: ['#134e5e', '#71b280', '#d4fc79'], label: 'Forest' },
  { path: 'public/photos/dusk.png', width: 1200, height: 800, colors: ['#0f2027', '#203a43', '#2c5364'], label: 'Dusk' },
  { path: 'app/hero.jpg', width: 1920, height: 800, colors: ['#8e2de2', '#4a00e0', '#00c9ff'], label: 'next-image-sidecar' },
]

for (const { path, width, height, colors, label } of images) {
  const out = join(root, path)
  if (existsSync(out)) continue
  mkdirSync(dirname(out), { recursive: true })
  const stops = colors.map((c, i) => `<stop offset="${(i / (colors.length - 1)) * 100}%" stop-color="${c}"/>`).join('')
  const circles = Array.from({ length: 24 }, (_, i) => {
    const x = ((i * 977) % width).toFixed(0)
    const y = ((i * 613) % height).toFixed(0)
    const r = 20 + ((i * 37) % (height / 6))
    return `<circle cx="${x}" cy="${y}" r="${r}" fill="white" fill-opacity="${0.05 + (i % 5) * 0.03}"/>`
  }).join('')
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">
    <defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">${stops}</linearGradient></defs>
    <rect width="100%" height="100%" fill="url(#g)"/>${circles}
    <text x="50%" y="55%" font-family="sans-serif" font-size="${Math.round(height / 8)}" fill="white" text-anchor="middle">${label}</text>
  </svg>`
  const image = sharp(Buffer.from(svg))
  await (path.endsWith('.png') ? image.png() : image.jpeg({ quality: 90 })).toFile(out)
  console.log(`generated ${path}`)
}
