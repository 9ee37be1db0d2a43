import { mock } from 'node:test'

/**
 * Freezes `Date` at the real time for the rest of the test; `advance(ms)` moves it. Timers and
 * I/O run as usual, so an entry's freshness depends only on the test, never on a busy machine.
 */
export function frozenClock(): { advance(ms: number): void; restore(): void } {
  mock.timers.enable({ apis: ['Date'], now: Date.now() })
  return { advance: (ms) => mock.timers.tick(ms), restore: () => mock.timers.reset() }
}
