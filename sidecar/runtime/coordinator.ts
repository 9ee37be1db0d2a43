/** A held single-flight lock. */
export interface Lock {
  key: string
  token: string
  /** When the lock expires by itself (epoch ms), where the coordinator knows it. */
  expiresAt?: number
}

/**
 * Coordinates identical cache misses across processes (replicas sharing a store): one
 * process holds the lock for a key and produces; the others wait for its entry.
 */
export interface Coordinator {
  /** The lock for `key`, or undefined when another process holds it. */
  acquire(key: string, ttlMs: number): Promise<Lock | undefined>
  /** Releases the lock and wakes the processes waiting for `key`. */
  release(lock: Lock): Promise<void>
  /** Resolves when `key` is announced, or after `maxMs`. */
  waitFor(key: string, maxMs: number): Promise<void>
  close(): Promise<void>
}

/** A purge as it travels between processes (the cache's PurgeSelector, as JSON). */
export type PurgeMessage = { sources: string[] } | { prefix: string } | { all: true }

/** Which other processes a purge reached: those that confirmed, and those known to be there that did not in time. */
export interface PurgeReach {
  applied: number
  missed: number
}

/**
 * Carries a purge to the other processes sharing a cache (the workers of a cluster, the replicas
 * on one Redis), each of which drops its own in-process copies and jobs in flight.
 */
export interface PurgeBroadcast {
  /**
   * Resolves once every process that got the message applied it, or when the wait ends: how many did
   * (`applied`), and how many known to keep copies did not confirm in time (`missed`).
   */
  announcePurge(selector: PurgeMessage): Promise<PurgeReach>
  /** This process's handler of the purges other processes announce. */
  onPurge(handler: (selector: PurgeMessage) => Promise<void>): void
  close?(): Promise<void>
}
