// Preloaded with `node --import` into a sidecar a test starts: its wall clock is CLOCK_SKEW_MS off
// (a host whose clock drifted), its monotonic clock and timers untouched.
const skew = Number(process.env.CLOCK_SKEW_MS ?? 0)
const now = Date.now
Date.now = () => now() + skew
