/** The command line's flags and their environment fallbacks, read as the options table declares them (server/options-table.ts). */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util'
import { detectNextVersion, lineOfVersion, parseNextVersion, type NextLine } from '../next/next-version.js'
import { findNextConfig, loadNextConfig } from '../next/next-config.js'
import { describeRange, invalidOption, parseInteger, type SidecarOptions } from '../server/options.js'
import { OPTIONS, option, type Command, type OptionKey, type OptionSpec, type ValueOfKind } from '../server/options-table.js'
import { defaultConcurrency, parseBytes, readContainerLimits } from '../runtime/limits.js'
export { HELP } from './help.js'


// util.parseArgs under the table rather than Commander: the table already carries what Commander's
// Option#env/#default/#argParser would (and the docs group and derived-default text it has no place
// for), parseArgs ships with Node (no dependency in the server's install), and its strict mode gives
// the unknown-flag and missing-value errors the CLI has always printed.

/** What parseArgs returns for a command's flags, typed from the table. */
export type FlagValues<C extends Command> = {
  -readonly [K in OptionKey as Table[K] extends { flag: string; commands: readonly (infer X)[] } ? (C extends X ? Table[K]['flag'] : never) : never]?: Table[K]['kind'] extends 'boolean'
    ? boolean
    : Table[K]['kind'] extends 'multiple'
      ? string[]
      : string
} & { help?: boolean }
type Table = typeof OPTIONS

/** parseArgs's option config for a command: each flag the table gives it, and --help. */
export function flagsOf(command: Command): ParseArgsOptionsConfig {
  const config: ParseArgsOptionsConfig = {}
  for (const spec of Object.values(OPTIONS) as OptionSpec[]) {
    if (spec.flag && spec.commands.includes(command)) config[spec.flag] = { type: spec.kind === 'boolean' ? 'boolean' : 'string', ...(spec.kind === 'multiple' && { multiple: true }) }
  }
  config.help = { type: 'boolean', short: 'h' }
  return config
}

/** A command's flags parsed strictly (unknown flags, missing values and stray positionals are errors). */
export function parseFlags<C extends Command>(command: C, argv: string[], allowPositionals = false): { values: FlagValues<C>; positionals: string[] } {
  const { values, positionals } = parseArgs({ args: argv, options: flagsOf(command), strict: true, allowPositionals })
  return { values: values as FlagValues<C>, positionals }
}

/** An option's value and where it came from: the flag, its variable, or the table's default (or none). */
export interface OptionValue<T> {
  value: T | undefined
  from: 'flag' | 'env' | 'default'
}

/**
 * An option read as the table declares it: the flag when given, else the environment variable, else
 * the default; checked by its kind and range, and an error names where the value came from
 * (`--timeout`, `--timeout (IMAGE_TIMEOUT_MS)`, or the variable of an environment-only setting).
 * Numbers, versions and secrets take an empty variable for unset; other texts keep it.
 */
export function readOption<K extends OptionKey>(key: K, values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): OptionValue<ValueOfKind<Table[K]['kind']>> {
  const spec = option(key)
  const flagged = spec.flag === undefined ? undefined : (values[spec.flag] as string | boolean | string[] | undefined)
  const variable = spec.env === undefined ? undefined : env[spec.env]
  const result = (value: unknown, from: OptionValue<unknown>['from']) => ({ value, from }) as OptionValue<ValueOfKind<Table[K]['kind']>>
  switch (spec.kind) {
    case 'boolean':
      return result(flagged === true || variable === '1', flagged === true ? 'flag' : variable === '1' ? 'env' : 'default')
    case 'multiple':
      return result(flagged, flagged === undefined ? 'default' : 'flag')
    case 'string':
    case 'list': {
      const fromFlag = flagged !== undefined
      const raw = fromFlag ? (flagged as string) : spec.emptyIsUnset && variable === '' ? undefined : variable
      const from = fromFlag ? 'flag' : raw === undefined ? 'default' : 'env'
      if (spec.kind === 'list') return result(raw?.split(',').map((n) => n.trim()).filter(Boolean), from)
      return result(raw ?? spec.default, from)
    }
    case 'nextVersion': {
      if (flagged) return result(parseNextVersion(flagged as string, `--${spec.flag}`), 'flag')
      return variable ? result(parseNextVersion(variable, spec.env!), 'env') : result(undefined, 'default')
    }
    default: {
      const fromFlag = flagged !== undefined
      const raw = fromFlag ? (flagged as string) : variable === '' ? undefined : variable
      if (raw === undefined) return result(spec.default, 'default')
      const name = fromFlag || spec.flag === undefined ? (spec.flag ? `--${spec.flag}` : spec.env!) : `--${spec.flag} (${spec.env})`
      return result(numberOf(spec, name, raw), fromFlag ? 'flag' : 'env')
    }
  }
}

/** A numeric option's text as a number within its range, or the one error naming it, the rule and the text. */
function numberOf(spec: OptionSpec, name: string, raw: string): number {
  const range = spec.range!
  if (spec.kind === 'workers') {
    // `auto`: one worker per CPU the cgroup quota allows (a 1-CPU container on a 16-core host runs one).
    if (raw === 'auto') return defaultConcurrency(readContainerLimits().cpus)
    if (!(/^[0-9]+$/.test(raw) && Number(raw) >= range.min && Number(raw) <= range.max)) throw invalidOption(name, `${describeRange(range)} or "auto"`, raw)
    return Number(raw)
  }
  if (spec.kind === 'bytes') {
    const bytes = parseBytes(raw)
    if (bytes === undefined || bytes < range.min || bytes > range.max) throw invalidOption(name, `bytes (268435456, 256Mi, 1Gi) from ${range.min / 1024 ** 2}Mi`, raw)
    return bytes
  }
  return parseInteger(name, raw, range)
}

/** An option's value (read as `readOption` does). */
export const valueOf = <K extends OptionKey>(key: K, values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env) => readOption(key, values, env).value

/** LOG_LEVEL, else the command's own default (the service logs at info, warm and purge only warnings). */
export function logLevel(commandDefault?: string, env: NodeJS.ProcessEnv = process.env): string {
  const { value, from } = readOption('logLevel', {}, env)
  return from === 'default' && commandDefault ? commandDefault : value!
}

/** Whether the flag or the variable of an option was given at all (an empty variable counts). */
export function given(key: OptionKey, values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): boolean {
  const spec = option(key)
  return (spec.flag !== undefined && values[spec.flag] !== undefined) || (spec.env !== undefined && env[spec.env] !== undefined)
}

/** The `SidecarOptions` fields read by serve, warm and purge alike, in the table's order. */
const SIDECAR_FIELDS = (Object.keys(OPTIONS) as OptionKey[]).filter((key) => option(key).scope === 'sidecar' && option(key).field && key !== 'nextVersion')

/** Which Next line's semantics to serve, and how that was decided (logged at start). */
export interface NextVersionChoice {
  line: NextLine
  /** The installed version when detected, else undefined. */
  version?: string
  from: '--next-version' | 'NEXT_VERSION' | 'detected' | 'default'
}

/**
 * The flag, else the environment, else the `next` package the config file resolves (its
 * directory's node_modules), else 16 (its newest line, 16.5). An installed 16.0–16.4 keeps 16.4's
 * rules, 16.5 and later 16.x get 16.5's. An unsupported version is refused, never guessed.
 */
export function chooseNextVersion(values: Record<string, unknown>, configPath: string | undefined, env: NodeJS.ProcessEnv = process.env): NextVersionChoice {
  const chosen = readOption('nextVersion', values, env)
  if (chosen.value !== undefined) return { line: chosen.value as NextLine, from: chosen.from === 'flag' ? '--next-version' : 'NEXT_VERSION' }
  const version = configPath ? detectNextVersion(configPath) : undefined
  if (version) return { line: lineOfVersion(version, `the next package beside ${configPath}`), version, from: 'detected' }
  return { line: '16.5', from: 'default' }
}

/** Said loudly at start when the Next line was not read from the app: a 15.5 app served as 16 answers 400 to its own URLs. */
export function undetectedNextVersion(configPath: string | undefined): string {
  const why = configPath ? `no next package resolvable beside ${configPath}` : 'no next.config found'
  return (
    `Next.js version not detected (${why}): serving Next 16.5 image semantics by default. ` +
    'A Next 15.5 app served this way gets 400 for w=16 and for qualities other than 75. ' +
    "Set NEXT_VERSION to the app's line, 16.5, 16.4 or 15 (or --next-version), to match the app"
  )
}

/** The sidecar options from flags and environment, shared by `serve`, `warm` and `purge` (on the store). */
export async function sidecarOptions(values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): Promise<{ options: SidecarOptions; configPath: string | undefined; nextVersion: NextVersionChoice }> {
  const configPath = valueOf('config', values, env) ?? findNextConfig(process.cwd())
  const nextVersion = chooseNextVersion(values, configPath, env)
  const nextConfig = configPath ? await loadNextConfig(configPath, nextVersion.line) : {}
  const fields: Record<string, unknown> = {}
  for (const key of SIDECAR_FIELDS) fields[key] = valueOf(key, values, env)
  const options = { ...fields, nextConfig, nextVersion: nextVersion.line } as SidecarOptions
  return { options, configPath, nextVersion }
}
