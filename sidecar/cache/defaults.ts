/**
 * The stores' defaults, in a module of their own without imports: the options table (and so `--help`, and a
 * `--workers` primary) reads them without loading the stores and their clients.
 */
export const STORE_DEFAULTS = {
  sqlitePath: '.cache/next-image-sidecar/cache.sqlite',
  sqliteMaxSize: 1024 ** 3,
  memoryMaxSize: 256 * 1024 ** 2,
  maxEntrySize: 16 * 1024 ** 2,
  prefix: 'next-image-sidecar:',
  hotSize: 64 * 1024 ** 2,
}
