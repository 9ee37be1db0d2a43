#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { createSidecar } from './app.js'
import { ConfigError } from './errors.js'
import { findNextConfig, loadNextConfig } from './next-config.js'
import { DEFAULTS } from './options.js'

const HELP = `next-image-sidecar — Next.js 16's /_next/image optimizer as its own service

Usage: next-image-sidecar [options]

Options (each has an environment variable; the flag wins):
  --port N            port to listen on                      PORT                   (3001)
  --host HOST         address to bind                        HOST                   (0.0.0.0)
  --frontend URL      the Next app's internal URL; relative  FRONTEND_INTERNAL_URL  (http://127.0.0.1:3000)
                      image URLs are fetched from it
  --config PATH       the app's next.config.{js,mjs,cjs,ts}  NEXT_CONFIG_PATH       (./next.config.* if present)
  --cache URL         sqlite://PATH, memory:// or            IMAGE_CACHE_URL        (${DEFAULTS.cache})
                      redis://[:PASSWORD@]HOST:PORT[/DB] (rediss:// for TLS; Valkey too)
  --cache-max-size BYTES   SQLite/memory budget, LRU         CACHE_MAX_SIZE         (1 GiB SQLite, 256 MiB memory)
  --cache-max-entry-size BYTES  larger images are not stored CACHE_MAX_ENTRY_SIZE   (16 MiB)
  --cache-prefix P    key prefix in Redis                    CACHE_PREFIX           (next-image-sidecar:)
  --hot-cache-size BYTES  in-process tier before SQLite/Redis HOT_CACHE_SIZE        (64 MiB; 0 = off)
  --concurrency N     transforms at once                     CONCURRENCY            (CPU cores)
  --queue-size N      transforms waiting; beyond → 503       QUEUE_SIZE             (64 × concurrency)
  --max-attempts N    attempts per image job (1 = Next's     MAX_ATTEMPTS           (${DEFAULTS.maxAttempts})
                      statuses, no retries)
  --timeout MS        deadline of one image job              IMAGE_TIMEOUT_MS       (${DEFAULTS.timeoutMs})
  --upstream-timeout MS  one upstream request                UPSTREAM_TIMEOUT_MS    (${DEFAULTS.upstreamTimeoutMs})
  --help              show this text
Logging: LOG_LEVEL (trace|debug|info|warn|error|silent), JSON lines on stdout.
`

function intOption(name: string, raw: string | undefined, fallback: number, min = 1): number {
  if (raw === undefined || raw === '') return fallback
  if (!/^[0-9]+$/.test(raw) || Number(raw) < min) throw new ConfigError(`${name}: expected an integer >= ${min}, received "${raw}"`)
  return Number(raw)
}

function optionalInt(name: string, raw: string | undefined, min = 1): number | undefined {
  return raw === undefined || raw === '' ? undefined : intOption(name, raw, 0, min)
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      frontend: { type: 'string' },
      config: { type: 'string' },
      cache: { type: 'string' },
      'cache-max-size': { type: 'string' },
      'cache-max-entry-size': { type: 'string' },
      'cache-prefix': { type: 'string' },
      'hot-cache-size': { type: 'string' },
      concurrency: { type: 'string' },
      'queue-size': { type: 'string' },
      'max-attempts': { type: 'string' },
      timeout: { type: 'string' },
      'upstream-timeout': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    process.stdout.write(HELP)
    return
  }
  const env = process.env
  const port = intOption('--port', values.port ?? env.PORT, 3001)
  const host = values.host ?? env.HOST ?? '0.0.0.0'
  const configPath = values.config ?? env.NEXT_CONFIG_PATH ?? findNextConfig(process.cwd())
  const nextConfig = configPath ? await loadNextConfig(configPath) : {}

  const sidecar = createSidecar({
    frontend: values.frontend ?? env.FRONTEND_INTERNAL_URL ?? 'http://127.0.0.1:3000',
    nextConfig,
    cache: values.cache ?? env.IMAGE_CACHE_URL ?? DEFAULTS.cache,
    cacheMaxSize: optionalInt('--cache-max-size', values['cache-max-size'] ?? env.CACHE_MAX_SIZE),
    cacheMaxEntrySize: optionalInt('--cache-max-entry-size', values['cache-max-entry-size'] ?? env.CACHE_MAX_ENTRY_SIZE),
    cachePrefix: values['cache-prefix'] ?? env.CACHE_PREFIX,
    hotCacheSize: optionalInt('--hot-cache-size', values['hot-cache-size'] ?? env.HOT_CACHE_SIZE, 0),
    concurrency: optionalInt('--concurrency', values.concurrency ?? env.CONCURRENCY),
    queueSize: optionalInt('--queue-size', values['queue-size'] ?? env.QUEUE_SIZE),
    maxAttempts: intOption('--max-attempts', values['max-attempts'] ?? env.MAX_ATTEMPTS, DEFAULTS.maxAttempts),
    timeoutMs: intOption('--timeout', values.timeout ?? env.IMAGE_TIMEOUT_MS, DEFAULTS.timeoutMs),
    upstreamTimeoutMs: intOption('--upstream-timeout', values['upstream-timeout'] ?? env.UPSTREAM_TIMEOUT_MS, DEFAULTS.upstreamTimeoutMs),
  })
  const server = await sidecar.listen(port, host)
  process.stdout.write(
    `${JSON.stringify({ level: 30, time: Date.now(), msg: 'next-image-sidecar listening', url: server.url, config: configPath ?? null, cache: sidecar.store.name })}\n`,
  )

  const shutdown = () => {
    server.close(() => {
      void sidecar.close().finally(() => process.exit(0))
    })
    server.closeIdleConnections()
  }
  process.once('SIGTERM', shutdown)
  process.once('SIGINT', shutdown)
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const message = err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    ? (err as Error).message
    : (err as Error).stack ?? String(err)
  process.stderr.write(`next-image-sidecar: ${message}\n`)
  process.exit(1)
})
