/**
 * The example app's browser test, with the app built and served by Next 15.5: the loader, the
 * fallback to Next 15's own optimizer and the sidecar's 15 profile, in Chromium.
 */
process.env.NEXT_MAJOR = '15'
await import('./browser.test.js')
