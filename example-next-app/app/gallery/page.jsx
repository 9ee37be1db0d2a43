import Image from 'next/image'

const basePath = process.env.EXAMPLE_BASE_PATH || ''
const photos = ['dawn.jpg', 'ocean.jpg', 'forest.jpg', 'dusk.png']

export default function Gallery() {
  return (
    <main>
      <h1>Gallery</h1>
      <div style={{ display: 'grid', gridTemplateColumns: 'repeat(auto-fill, minmax(240px, 1fr))', gap: 12 }}>
        {photos.flatMap((name, i) =>
          [0, 1, 2].map((n) => (
            <div key={`${name}-${n}`} style={{ position: 'relative', aspectRatio: '3 / 2' }}>
              <Image src={`${basePath}/photos/${name}`} alt={`${name} ${n}`} fill sizes="(max-width: 600px) 100vw, 33vw" quality={[50, 75, 90][(i + n) % 3]} style={{ objectFit: 'cover' }} />
            </div>
          )),
        )}
      </div>
    </main>
  )
}
