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
