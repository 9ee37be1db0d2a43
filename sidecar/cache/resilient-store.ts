import type { Logger } from 'pino'
import type { CacheEntry, CacheStore } from './types.js'

/**
 * Makes a store failure a cache miss instead of a failed request: every operation is bounded
 * by a timeout, a failure is logged once per outage, and for a short back-off the store is
 * skipped; then it is tried again and its recovery is logged.
 */
export class ResilientStore implements CacheStore {
  readonly name: string
  private downSince: number | undefined
  private retryAt = 0

  constructor(
    private readonly inner: CacheStore,
    private readonly log: Logger,
    private readonly timeoutMs = 1000,
    private readonly backoffMs = 1000,
    private readonly onHealth?: (up: boolean) => void,
  ) {
    this.name = inner.name
  }

  get available(): boolean {
    return this.downSince === undefined
  }

  private async attempt<T>(op: () => Promise<T>, fallback: T): Promise<T> {
    if (this.downSince !== undefined && Date.now() < this.retryAt) return fallback
    let timer: NodeJS.Timeout | undefined
    try {
      const result = await Promise.race([
        op(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`cache store did not answer within ${this.timeoutMs} ms`)), this.timeoutMs)
        }),
      ])
      if (this.downSince !== undefined) {
        this.log.warn({ store: this.name, downForMs: Date.now() - this.downSince }, 'cache store recovered')
        this.downSince = undefined
        this.onHealth?.(true)
      }
      return result
    } catch (err) {
      if (this.downSince === undefined) {
        this.downSince = Date.now()
        this.log.error({ err, store: this.name }, 'cache store failed; serving without it until it recovers')
        this.onHealth?.(false)
      }
      this.retryAt = Date.now() + this.backoffMs
      return fallback
    } finally {
      clearTimeout(timer)
    }
  }

  get(key: string): Promise<CacheEntry | undefined> {
    return this.attempt(() => this.inner.get(key), undefined)
  }

  set(key: string, entry: CacheEntry, ttlMs: number): Promise<void> {
    return this.attempt(() => this.inner.set(key, entry, ttlMs), undefined)
  }

  delete(key: string): Promise<void> {
    return this.attempt(() => this.inner.delete(key), undefined)
  }

  /** Not softened: readiness must see the real state. */
  ping(): Promise<void> {
    return this.inner.ping()
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}
