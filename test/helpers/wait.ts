import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Polls `condition` every `everyMs` until it holds, failing after `timeoutMs` with `what`:
 * a bounded wait on an observable state, never a sleep standing in for one.
 */
export async function waitUntil(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000, everyMs = 20): Promise<void> {
  const giveUp = performance.now() + timeoutMs
  while (!(await condition())) {
    if (performance.now() > giveUp) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}
