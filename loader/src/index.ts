// The package's main entry is what a next.config imports; the loader file is ./loader (set by withImageSidecar).
export { withImageSidecar, resolveSidecarUrl, ImageSidecarConfigError, type ImageSidecarOptions } from './config.js'
export { withImageSidecar as default } from './config.js'
