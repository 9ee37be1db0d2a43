import Image from 'next/image'
import Link from 'next/link'
import hero from './hero.jpg'
import mark from './mark.svg'

// Rendered per request, like a real app's SSR page (the benchmarks measure its latency).
export const dynamic = 'force-dynamic'

const basePath = process.env.EXAMPLE_BASE_PATH || ''
const remote = process.env.EXAMPLE_REMOTE_IMAGE

export default function Home() {
  return (
    <main>
      <h1>next-image-sidecar example</h1>
      <p>
        Rendered at {new Date().toISOString()}. Every image below is a plain <code>next/image</code>; where it is optimized depends only
        on <code>IMAGE_SIDECAR_URL</code> at build time. <Link href="/gallery">Gallery</Link> ·{' '}
        {/* Not prefetched: that page asks the sidecar for placeholders when it renders. */}
        <Link href="/placeholders" prefetch={false}>
          Blur placeholders
        </Link>
      </p>

      <h2>SVGs (served as they are, never optimized: Next's rule, kept by the sidecar's loader)</h2>
      <Image id="logo-svg" src={`${basePath}/logo.svg`} alt="Logo" width={160} height={40} priority />
      <Image id="mark-svg" src={mark} alt="Mark" />

      <h2>Statically imported (served from /_next/static/media)</h2>
      <Image id="static-hero" src={hero} alt="Hero banner" placeholder="empty" sizes="100vw" style={{ width: '100%', height: 'auto' }} priority />

      <h2>From public/, fixed width</h2>
      <Image id="fixed-dawn" src={`${basePath}/photos/dawn.jpg`} alt="Dawn" width={300} height={200} />

      <h2>From public/, explicit quality</h2>
      <Image id="quality-ocean" src={`${basePath}/photos/ocean.jpg`} alt="Ocean" width={400} height={267} quality={90} />

      <h2>fill + sizes</h2>
      <div style={{ position: 'relative', width: '50%', aspectRatio: '4 / 3' }}>
        <Image id="fill-forest" src={`${basePath}/photos/forest.jpg`} alt="Forest" fill sizes="(max-width: 768px) 100vw, 50vw" style={{ objectFit: 'cover' }} />
      </div>

      <h2>PNG source</h2>
      <Image id="png-dusk" src={`${basePath}/photos/dusk.png`} alt="Dusk" width={240} height={160} quality={50} />

      <h2>unoptimized (the file as it is)</h2>
      <Image id="unoptimized-dusk" src={`${basePath}/photos/dusk.png`} alt="Dusk, unoptimized" width={120} height={80} unoptimized />

      {remote ? (
        <>
          <h2>Remote image (allowed by remotePatterns)</h2>
          <Image id="remote" src={remote} alt="Remote" width={320} height={213} />
        </>
      ) : null}
    </main>
  )
}
