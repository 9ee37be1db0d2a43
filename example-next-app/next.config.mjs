// The two lines a Next.js app needs: import the helper, wrap the config.
// With IMAGE_SIDECAR_URL set at `next build`, every <Image> is served by the sidecar;
// without it, this config is returned untouched and Next optimizes images itself.
import { withImageSidecar } from 'next-image-sidecar-loader'
import { createRequire } from 'node:module'

// EXAMPLE_REMOTE_IMAGE: an absolute image URL the home page shows, allowed by remotePatterns.
const remote = process.env.EXAMPLE_REMOTE_IMAGE ? new URL(process.env.EXAMPLE_REMOTE_IMAGE) : undefined
const loopback = remote !== undefined && ['127.0.0.1', 'localhost', '[::1]'].includes(remote.hostname)
// The app builds with Next 16 and with Next 15.5; only 16 has (and 15 refuses) dangerouslyAllowLocalIP.
const nextMajor = Number(createRequire(import.meta.url)('next/package.json').version.split('.')[0])

/** @type {import('next').NextConfig} */
const nextConfig = {
  basePath: process.env.EXAMPLE_BASE_PATH || undefined,
  distDir: process.env.EXAMPLE_DIST_DIR || '.next',
  images: {
    qualities: [50, 75, 90],
    formats: process.env.EXAMPLE_AVIF ? ['image/avif', 'image/webp'] : ['image/webp'],
    remotePatterns: remote ? [{ protocol: remote.protocol.slice(0, -1), hostname: remote.hostname, port: remote.port, pathname: remote.pathname }] : [],
    // Only for a remote image server on this machine (the end-to-end tests); never in production.
    ...(loopback && nextMajor >= 16 ? { dangerouslyAllowLocalIP: true } : {}),
  },
}

export default withImageSidecar(nextConfig)
