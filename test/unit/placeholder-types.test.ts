/**
 * getImagePlaceholder's result as TypeScript sees it where apps pass it: `<Image src>` takes
 * `string | StaticImport`. `npm test` type-checks this file (strict); each @ts-expect-error fails the
 * check when the line it marks starts compiling, so the types cannot drift either way.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { ImageProps, StaticImageData } from 'next/image.js'
import { getImagePlaceholder, type ImagePlaceholder } from '../../loader/src/placeholder-core.js'

type ImageSrc = ImageProps['src']
const asSrc = (src: ImageSrc): ImageSrc => src

test('with a fallback, the result is a StaticImageData and a valid <Image src> as it is', async () => {
  const photo = await getImagePlaceholder('/a.jpg', { sidecarUrl: 'not a url', fallback: { width: 12, height: 8 } })
  const data: StaticImageData = photo
  assert.equal(asSrc(data), photo)
  assert.equal(photo.width, 12)
})

test('without a fallback, TypeScript requires a check before <Image src>, and the check narrows it', async () => {
  const photo: ImagePlaceholder = await getImagePlaceholder('/a.jpg', { sidecarUrl: 'not a url' })
  // @ts-expect-error -- a failed call without a fallback has no size: not a StaticImageData
  asSrc(photo)
  if (photo.width !== undefined) asSrc(photo)
  assert.equal(photo.width, undefined)
})
