// The images config the sidecar container reads (mount your app's own next.config instead when it
// has no imports the sidecar image lacks). Keep it identical to the frontend's `images` block.
export default {
  images: {
    qualities: [50, 75, 90],
    formats: ['image/webp'],
  },
}
