// `next-image-sidecar/config` for existing configs: withImageSidecar lives in the frontend package.
export * from 'next-image-sidecar-loader/config'
export { default } from 'next-image-sidecar-loader/config'
