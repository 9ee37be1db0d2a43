// `next-image-sidecar/loader` for existing configs: the loader lives in the frontend package.
export * from 'next-image-sidecar-loader/loader'
export { default } from 'next-image-sidecar-loader/loader'
