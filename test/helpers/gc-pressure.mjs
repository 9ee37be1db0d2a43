// Loaded with `node --expose-gc --import` into a sidecar process: a full garbage collection every
// 20 ms, so anything held only weakly — such as a timeout signal inside AbortSignal.any
// (nodejs/node#57736) — is collected long before it is due.
if (typeof globalThis.gc !== 'function') throw new Error('gc-pressure.mjs needs node --expose-gc')
setInterval(() => globalThis.gc(), 20).unref()
