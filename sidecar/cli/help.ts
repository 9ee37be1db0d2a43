/** `--help`, laid out by code from the options table (server/options-table.ts): nothing here is aligned by hand. */
import { GROUPS, OPTIONS, type Command, type Group, type OptionSpec } from '../server/options-table.js'

const WIDTH = 100
const INDENT = 2
/** The flag column; a longer flag puts its description on the next line. */
const FLAG_COLUMN = 30

const specs = Object.values(OPTIONS) as OptionSpec[]

/** Words of `text` in lines of at most `width` characters (a longer word stands alone). */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = []
  let line = ''
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line)
      line = word
    } else line = line ? `${line} ${word}` : word
  }
  if (line) lines.push(line)
  return lines
}

/** The text --help shows for an option in a command's section. */
const helpOf = (spec: OptionSpec, command: Command) => (typeof spec.help === 'string' ? spec.help : (spec.help[command] ?? spec.help.serve ?? Object.values(spec.help)[0]!))

/** Markdown's backticks dropped, for a terminal. */
const plain = (text: string) => text.replaceAll('`', '')

/** A numeric option's range as --help and the docs say it (`1–65535`, `1–2147483647 ms`, `from 64Mi`). */
export function rangeText(spec: OptionSpec): string {
  const range = spec.range
  if (!range) return ''
  if (spec.kind === 'bytes') return `from ${range.min / 1024 ** 2}Mi`
  if (range.max === Number.MAX_SAFE_INTEGER) return `${range.min}–2^53−1 bytes`
  return `${range.min}–${range.max}${range.unit === 'ms' ? ' ms' : ''}${spec.kind === 'workers' ? ' or auto' : ''}`
}

/** `PORT · 1–65535 · default: 3001`: the line under an option's description. */
function envAndDefault(spec: OptionSpec, withEnv: boolean, withDefault: boolean): string {
  const parts: string[] = []
  if (withEnv && spec.env) parts.push(spec.kind === 'boolean' ? `${spec.env}=1` : spec.env)
  if (spec.range) parts.push(rangeText(spec))
  if (withDefault && spec.defaultText) parts.push(`default: ${plain(spec.defaultText)}`)
  return parts.join(' · ')
}

/** One option: the flag (or the variable) in the left column, its description and then its variable, range and default at the right. */
export function optionLines(spec: OptionSpec, command: Command, withEnv = true, withDefault = true): string[] {
  const left = `${' '.repeat(INDENT)}${spec.flag ? `--${spec.flag}${spec.arg ? ` ${spec.arg}` : ''}` : spec.env}`
  return columns(left, [...wrap(helpOf(spec, command), WIDTH - FLAG_COLUMN), ...wrap(envAndDefault(spec, withEnv && spec.flag !== undefined, withDefault), WIDTH - FLAG_COLUMN)])
}

/** `left` in the flag column and `right` beside it (below it when `left` is too long). */
function columns(left: string, right: string[]): string[] {
  const pad = ' '.repeat(FLAG_COLUMN)
  if (left.length + 1 > FLAG_COLUMN) return [left, ...right.map((l) => pad + l)]
  return [left.padEnd(FLAG_COLUMN) + right[0], ...right.slice(1).map((l) => pad + l)]
}

const inGroup = (group: Group) => specs.filter((s) => s.group === group)

export function renderHelp(): string {
  const out: string[] = [
    "next-image-sidecar — Next.js's /_next/image optimizer (15.5 and 16) as its own service",
    '',
    'Usage: next-image-sidecar [options]                serve',
    '       next-image-sidecar warm [sources] [options] fill the cache before traffic arrives',
    '       next-image-sidecar purge <src…> | --prefix P | --all  (--target URL | --cache URL)',
    '                                                   remove every cached variant of sources',
    '',
    'Options (each has an environment variable; the flag wins):',
  ]
  for (const group of ['serve', 'app', 'fetch', 'cache', 'capacity', 'beyond'] as const) {
    out.push('', `${GROUPS[group]}:`)
    for (const spec of inGroup(group)) if (spec.flag) out.push(...optionLines(spec, 'serve'))
  }
  out.push(`${'  --help, -h'.padEnd(FLAG_COLUMN)}show this text`)
  // Which of them warm takes, from the table, rather than a sentence that can drift from it.
  const serviceOnly = specs.filter((s) => s.flag && s.commands.includes('serve') && !s.commands.includes('warm')).map((s) => `--${s.flag}`)
  out.push('', ...wrap(`warm takes these too, except ${serviceOnly.join(', ')}.`, WIDTH), '', 'Environment only:')
  for (const spec of specs) if (!spec.flag && spec.env) out.push(...optionLines(spec, 'serve'))
  out.push(
    '',
    'Tracing: off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or',
    'OTEL_TRACES_EXPORTER=otlp|console) is set; OTLP over HTTP, the standard OTEL_* variables apply.',
    '',
    'warm sources (combinable):',
  )
  for (const spec of inGroup('warm')) if (spec.scope === 'warm' && ['pages', 'sitemap', 'from', 'urls'].includes(spec.flag!)) out.push(...optionLines(spec, 'warm', false))
  out.push('warm options:')
  for (const spec of specs) if (spec.commands.includes('warm') && spec.group === 'warm' && !['pages', 'sitemap', 'from', 'urls'].includes(spec.flag!)) out.push(...optionLines(spec, 'warm', false))
  out.push(
    'Each variant is warmed in every format the config negotiates plus the source-format fallback.',
    'Fresh entries are skipped (a second run resumes); the exit code is 1 if anything failed.',
    '',
    'purge (one of them):',
    ...columns('  SRC…', wrap('sources as the app requests them: /images/hero.jpg, https://cdn.example/a.png', WIDTH - FLAG_COLUMN)),
  )
  for (const spec of inGroup('purge')) out.push(...optionLines(spec, 'purge'))
  out.push('purge options:')
  for (const spec of specs) if (spec.commands.includes('purge') && typeof spec.help !== 'string' && spec.help.purge) out.push(...optionLines(spec, 'purge', true, false))
  out.push(
    'Prints the count and the optimizer URLs that were cached (one a line, for a CDN purge); exit 1 when',
    'nothing could be reached.',
    '',
  )
  return out.join('\n')
}

export const HELP = renderHelp()
