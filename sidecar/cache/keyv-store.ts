import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import Keyv from 'keyv'
import KeyvSqlite from '@keyv/sqlite'
import { ConfigError } from '../errors.js'
import type { CacheEntry, CacheStore } from './types.js'

/** How an entry travels through a string-valued store: metadata as JSON, bytes as base64. */
interface SerializedEntry extends Omit<CacheEntry, 'buffer'> {
  body: string
}

const encode = (entry: CacheEntry): SerializedEntry => {
  const { buffer, ...meta } = entry
  return { ...meta, body: buffer.toString('base64') }
}
const decode = (value: SerializedEntry): CacheEntry => {
  const { body, ...meta } = value
  return { ...meta, buffer: Buffer.from(body, 'base64') }
}

class KeyvStore implements CacheStore {
  constructor(
    readonly name: string,
    private readonly keyv: Keyv,
    private readonly binary: boolean,
  ) {
    // keyv emits store errors as events; an unhandled 'error' event would crash the process.
    keyv.on('error', () => {})
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    const value = await this.keyv.get(key)
    if (!value) return undefined
    return this.binary ? (value as CacheEntry) : decode(value as SerializedEntry)
  }

  async set(key: string, entry: CacheEntry, ttlMs: number): Promise<void> {
    const ok = await this.keyv.set(key, this.binary ? entry : encode(entry), ttlMs > 0 ? ttlMs : undefined)
    if (ok === false) throw new Error(`cache store ${this.name} refused to store ${key}`)
  }

  async ping(): Promise<void> {
    await this.keyv.has('next-image-sidecar:ping')
  }

  async close(): Promise<void> {
    await this.keyv.disconnect()
  }
}

/** The SQLite file used when no cache URL is given, relative to the working directory. */
export const DEFAULT_SQLITE_PATH = '.cache/next-image-sidecar/cache.sqlite'

/**
 * Opens a cache store from its URL: `sqlite://PATH` (relative or absolute path; the default)
 * or `memory://`. Entries outlive their freshness: stale ones are still served (STALE) while
 * they revalidate, so the store TTL is a multiple of max-age (see response-cache.ts).
 */
export function openStore(cacheUrl: string): CacheStore {
  if (cacheUrl === 'memory://' || cacheUrl === 'memory') {
    // The Map holds entries as objects, so buffers are not serialised at all.
    const keyv = new Keyv({ store: new Map(), serialize: undefined, deserialize: undefined })
    return new KeyvStore('memory://', keyv, true)
  }
  if (cacheUrl.startsWith('sqlite://')) {
    const path = resolve(cacheUrl.slice('sqlite://'.length) || DEFAULT_SQLITE_PATH)
    mkdirSync(dirname(path), { recursive: true })
    const keyv = new Keyv({ store: new KeyvSqlite({ uri: `sqlite://${path}`, table: 'next_image_cache', busyTimeout: 5000 }) })
    return new KeyvStore(`sqlite://${path}`, keyv, false)
  }
  throw new ConfigError(`--cache: unsupported cache URL "${cacheUrl}" (expected sqlite://PATH or memory://)`)
}
