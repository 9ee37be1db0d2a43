import Image from 'next/image'
import { getImagePlaceholder } from 'next-image-sidecar-loader/placeholder'

// The placeholders come from the sidecar when the page is rendered (a CMS image can change at any time).
export const dynamic = 'force-dynamic'

const basePath = process.env.EXAMPLE_BASE_PATH || ''
const remote = process.env.EXAMPLE_REMOTE_IMAGE

// Without a sidecar (or when it does not answer in time) the page still renders: the fallback size
// keeps the layout, and the image simply arrives without a blurred preview.
const sources = [
  ...(remote ? [{ id: 'placeholder-remote', src: remote, alt: 'Remote image, with a blur placeholder', fallback: { width: 480, height: 320 } }] : []),
  { id: 'placeholder-public', src: `${basePath}/photos/dawn.jpg`, alt: 'Dawn, with a blur placeholder', fallback: { width: 1200, height: 800 } },
]

export default async function Placeholders() {
  const photos = await Promise.all(sources.map(({ src, fallback }) => getImagePlaceholder(src, { fallback })))
  return (
    <main>
      <h1>Blur placeholders for images that are not static imports</h1>
      <p>
        Width, height and the blurred preview of each image come from the sidecar (<code>getImagePlaceholder</code>), as Next gives them to a
        static import.
      </p>
      <div style={{ display: 'flex', flexWrap: 'wrap', gap: 16, alignItems: 'flex-start' }}>
        {sources.map(({ id, alt }, i) => {
          const photo = photos[i]
          return (
            <Image
              key={id}
              id={id}
              src={photo}
              placeholder={photo.placeholder}
              alt={alt}
              sizes="(max-width: 560px) 100vw, 480px"
              style={{ width: '100%', maxWidth: 480, height: 'auto' }}
              data-placeholder-error={photo.error?.reason}
            />
          )
        })}
      </div>
      <p id="below-images">This text does not move when the images arrive: their boxes have their final size from the first paint.</p>
    </main>
  )
}
