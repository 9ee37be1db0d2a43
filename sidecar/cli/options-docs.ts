/**
 * docs/configuration.md's reference of every option, generated from the options table
 * (server/options-table.ts) between two markers; test/unit/configuration-docs.test.ts fails when the
 * committed page differs from what the table gives.
 */
import { GROUPS, OPTIONS, type Group, type OptionSpec } from '../server/options-table.js'
import { rangeText } from './help.js'

export const BEGIN = '<!-- options: generated from sidecar/server/options-table.ts by sidecar/cli/options-docs.ts; edit the table, then UPDATE_DOCS=1 node --import tsx --test test/unit/configuration-docs.test.ts -->'
export const END = '<!-- end of the generated options -->'

/** A table cell: pipes escaped, one line. */
const cell = (text: string) => text.replaceAll('|', '\\|').replace(/\s*\n\s*/g, ' ')

/** What an option means, for the docs: its own text, else its one line (per command when it has several). */
function meaning(spec: OptionSpec): string {
  if (spec.doc) return spec.doc
  if (typeof spec.help === 'string') return spec.help
  return Object.entries(spec.help).map(([command, text]) => `${command}: ${text}`).join('; ')
}

/** The Markdown of every group's table, in the table's order. */
export function renderOptionsDocs(): string {
  const specs = Object.values(OPTIONS) as OptionSpec[]
  const out: string[] = []
  for (const group of Object.keys(GROUPS) as Group[]) {
    const rows = specs.filter((s) => s.group === group)
    if (rows.length === 0) continue
    out.push(`#### ${GROUPS[group]}`, '', '| flag | env | default | range | meaning |', '|---|---|---|---|---|')
    for (const spec of rows) {
      const flag = spec.flag ? `\`--${spec.flag}\`${spec.commands.length === 1 && spec.commands[0] !== 'serve' ? ` (${spec.commands[0]})` : ''}` : ''
      const env = spec.env ? `\`${spec.env}${spec.kind === 'boolean' ? '=1' : ''}\`` : ''
      const range = rangeText(spec)
      out.push(`| ${flag} | ${env} | ${cell(spec.defaultText)} | ${range ? cell(range) : ''} | ${cell(meaning(spec))} |`)
    }
    out.push('')
  }
  return out.join('\n')
}

/** `page` with the text between the markers replaced by the generated reference. */
export function withOptionsDocs(page: string): string {
  const begin = page.indexOf(BEGIN)
  const end = page.indexOf(END)
  if (begin < 0 || end < begin) throw new Error('docs/configuration.md: the markers of the generated options are missing')
  return `${page.slice(0, begin + BEGIN.length)}\n\n${renderOptionsDocs()}\n${page.slice(end)}`
}
