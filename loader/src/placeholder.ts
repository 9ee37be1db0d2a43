// Importing this entry from a Client Component fails `next build`: the helper may read a signing key
// and calls the sidecar's internal URL, neither of which belongs in a browser bundle. package.json's
// `sideEffects` must keep listing this file: with `"sideEffects": false`, Turbopack (Next 16.4.6's
// default `next build`) skips this re-exporting module, the marker with it, and the build passes.
import 'server-only'

// The helper itself is the Pages Router entry's (without the marker).
export * from './placeholder-pages.js'
