// getImagePlaceholder without the server-only marker, for where Next refuses the marker: the Pages
// Router (getStaticProps, getServerSideProps, API routes; Next strips the data functions, and what
// only they import, from the browser bundle) and plain Node scripts. App Router code imports
// ./placeholder, whose marker fails the build of a Client Component that imports it.
export {
  getImagePlaceholder,
  type ImagePlaceholder,
  type SizedImagePlaceholder,
  type UnsizedImagePlaceholder,
  type ImagePlaceholderError,
  type ImagePlaceholderOptions,
  type ImagePlaceholderFailure,
} from './placeholder-core.js'
