import { markTime, selects, type PurgeSelector } from './types.js'

/** How many purges an in-process log remembers; a mark older than that is answered "purged" (safe). */
const KEEP = 1000

/**
 * The purge log of a store private to this process (memory://): a counter and the last purges,
 * so a job can tell whether its source was purged since it started.
 */
export class PurgeLog {
  private last = 0
  private readonly entries: Array<{ id: number; at: number; selector: PurgeSelector }> = []

  record(selector: PurgeSelector): void {
    this.entries.push({ id: ++this.last, at: Date.now(), selector })
    if (this.entries.length > KEEP) this.entries.shift()
  }

  mark(): string {
    return String(this.last)
  }

  purgedSince(mark: string | undefined, href: string): boolean {
    const from = mark === undefined ? undefined : markTime(mark)
    if (from !== undefined) return this.entries.some((e) => e.at >= from && selects(e.selector, href))
    const since = Number(mark)
    if (!Number.isInteger(since)) return true
    if (since >= this.last) return false
    if ((this.entries[0]?.id ?? Infinity) > since + 1) return true
    return this.entries.some((e) => e.id > since && selects(e.selector, href))
  }
}

/** Own records remembered: more than a follower can be behind before it drops its whole hot tier instead. */
const OWN_KEPT = 4000

/**
 * The ids of the purge log records this process wrote, which its follower skips when it replays the log
 * (they were applied when made). Bounded: without a follower (no hot tier) nothing ever takes them out.
 */
export class OwnRecords {
  private readonly ids = new Set<number>()

  add(id: number): void {
    this.ids.add(id)
    if (this.ids.size > OWN_KEPT) this.ids.delete(this.ids.values().next().value!)
  }

  /** Whether `id` is one of this process's records (forgotten once asked). */
  take(id: number): boolean {
    return this.ids.delete(id)
  }
}
