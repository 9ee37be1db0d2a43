/** `next-image-sidecar warm [sources] [options]`: fills the cache before traffic arrives. */
import { pino } from 'pino'
import { ConfigError } from '../errors.js'
import { negotiableFormats, resolveSidecarConfig } from '../next/images-config.js'
import { readContainerLimits } from '../runtime/limits.js'
import { redactText } from '../runtime/credentials.js'
import { collectRequests, planPlaceholders, planVariants, progressReporter, warmVariants } from './warm.js'
import { HELP, logLevel, parseFlags, undetectedNextVersion, sidecarOptions } from './flags.js'

// The service (Express, sharp, the store clients) is loaded only to warm through a sidecar of its own,
// not for --target.
const loadApp = () => import('../server/app.js')

/** Everything `warm` reads from its flags and the environment, checked; `help` when asked for --help. */
export async function warmSettings(argv: string[], env: NodeJS.ProcessEnv = process.env) {
  const { values, positionals } = parseFlags('warm', argv, true)
  if (values.help) return { help: true as const }
  const { options, configPath, nextVersion } = await sidecarOptions(values, env)
  return { help: false as const, values, positionals, options, configPath, nextVersion }
}

export async function warm(argv: string[]): Promise<number> {
  const settings = await warmSettings(argv)
  if (settings.help) return void process.stdout.write(HELP), 0
  const { values, positionals, options, configPath, nextVersion } = settings
  if (nextVersion.from === 'default') process.stderr.write(`warm: ${undetectedNextVersion(configPath)}\n`)
  const config = resolveSidecarConfig(options)
  // `--pages A B C`: parseArgs sees B and C as positionals; they are pages too.
  if (positionals.length > 0 && !values.pages) throw new ConfigError(`warm: unexpected argument "${positionals[0]}" (pages go after --pages)`)
  const sources = { pages: [...(values.pages ?? []), ...positionals], sitemap: values.sitemap, from: values.from, urls: values.urls }
  if (!sources.pages?.length && !sources.sitemap && !sources.from && !sources.urls) {
    throw new ConfigError('warm: name at least one source: --pages URL..., --sitemap URL, --from PATH or --urls FILE')
  }
  const { requests, errors } = await collectRequests(sources, config, { timeoutMs: options.timeoutMs })
  const variants = planVariants(requests, config, options.signingKey)
  const formats = [...negotiableFormats(config), 'source format']
  process.stderr.write(`warm: ${requests.length} image requests × ${formats.length} formats (${formats.join(', ')}) = ${variants.length} variants\n`)
  const placeholders = values.placeholders ? planPlaceholders(requests, options.signingKey) : undefined
  if (placeholders) process.stderr.write(`warm: and ${placeholders.length} placeholders (one per source)\n`)
  for (const error of errors) process.stderr.write(`warm: could not read ${redactText(String(error))}\n`)
  if (values['dry-run']) {
    for (const v of variants) process.stdout.write(`${v.accept.padEnd(10)} ${v.path}\n`)
    for (const p of placeholders ?? []) process.stdout.write(`${'placeholder'.padEnd(10)} ${p.path}\n`)
    return errors.length > 0 ? 1 : 0
  }
  const concurrency = options.concurrency ?? Math.max(Math.ceil(readContainerLimits().cpus) - 1, 1)
  // A warm run on a live node leaves room for traffic: one core fewer, also for transforms.
  const { createSidecar } = await loadApp()
  const sidecar = values.target ? values.target : createSidecar({ ...options, concurrency, cacheMaintenance: true, logger: pino({ level: logLevel('warn') }) })
  // Serving around a failing store is right for traffic, wrong for a warm run: it would report every
  // variant warmed while nothing was kept.
  if (typeof sidecar !== 'string') {
    const down = await sidecar.store.ping().then(() => undefined, (err: Error) => err)
    if (down) {
      await sidecar.close()
      throw new ConfigError(`warm: the cache store ${sidecar.store.name} does not answer (${down.message}); nothing warmed would be kept`)
    }
  }
  const summary = await warmVariants(sidecar, variants, {
    concurrency,
    timeoutMs: options.timeoutMs,
    placeholders,
    onProgress: progressReporter(process.stderr, 'warm', placeholders ? 'variants and placeholders' : 'variants'),
  })
  let transforms = ''
  let unstored = false
  if (typeof sidecar !== 'string') {
    transforms = `, ${(await sidecar.metrics.transforms.get()).values[0]?.value ?? 0} transforms here`
    unstored = sidecar.store.available === false
    await sidecar.close()
    if (unstored) process.stderr.write(`warm: the cache store ${sidecar.store.name} could not store every variant during the run (see its log lines)\n`)
  }
  process.stdout.write(
    `warm: ${summary.variants} variants: ${summary.warmed} warmed, ${summary.skipped} already fresh, ${summary.failed.length} failed; ` +
      `${(summary.bytesWritten / 1024 ** 2).toFixed(1)} MiB written in ${(summary.elapsedMs / 1000).toFixed(1)} s${transforms}\n`,
  )
  // A run's summary ends up in CI logs: a presigned source's signature must not (runtime/credentials.ts).
  for (const { variant, reason } of summary.failed) process.stdout.write(`  failed: ${redactText(variant.path)} (Accept: ${variant.accept}): ${redactText(String(reason))}\n`)
  const ph = summary.placeholders
  if (ph) {
    process.stdout.write(`warm: ${ph.total} placeholders: ${ph.warmed} warmed, ${ph.skipped} already fresh, ${ph.failed.length} failed\n`)
    for (const { placeholder, reason } of ph.failed) process.stdout.write(`  failed: placeholder of ${redactText(placeholder.source)}: ${redactText(String(reason))}\n`)
  }
  const failed = summary.failed.length + (ph?.failed.length ?? 0)
  return failed > 0 || errors.length > 0 || unstored ? 1 : 0
}
