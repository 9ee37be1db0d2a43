// Importing this entry from a Client Component fails `next build`: the helper may read a signing key
// and calls the sidecar's internal URL, neither of which belongs in a browser bundle.
import 'server-only'

export {
  getImagePlaceholder,
  type ImagePlaceholder,
  type ImagePlaceholderOptions,
  type ImagePlaceholderFailure,
} from './placeholder-core.js'
