/**
 * The options table (server/options-table.ts) is the one declaration of every option: --help is laid
 * out from it, the parser reads it, and it holds together (defaults within ranges, every flag
 * reachable from a command).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { OPTIONS, type OptionSpec } from '../../sidecar/server/options-table.js'
import { HELP } from '../../sidecar/cli/help.js'
import { flagsOf } from '../../sidecar/cli/flags.js'
import type { SidecarOptions } from '../../sidecar/server/options.js'

const specs = Object.entries(OPTIONS as Record<string, OptionSpec>)

test('--help names every flag and every variable of the table, in lines of at most 100 characters', () => {
  for (const [key, spec] of specs) {
    if (spec.flag) assert.match(HELP, new RegExp(`(^|\\s)--${spec.flag}(\\s|$)`, 'm'), key)
    if (spec.env) assert.match(HELP, new RegExp(`(^|\\s)${spec.env}(=1)?(\\s|$)`, 'm'), key)
  }
  for (const line of HELP.split('\n')) assert.ok(line.length <= 100, line)
})

test('every default is within its range, and every option is reachable (a flag of a command, or a variable)', () => {
  for (const [key, spec] of specs) {
    if (spec.range && typeof spec.default === 'number') assert.ok(spec.default >= spec.range.min && spec.default <= spec.range.max, key)
    if (['integer', 'bytes', 'workers'].includes(spec.kind)) assert.ok(spec.range, `${key} has no range`)
    assert.ok(spec.env || (spec.flag && spec.commands.length > 0), key)
    if (spec.flag) for (const command of spec.commands) assert.ok(spec.flag in flagsOf(command), `${key} in ${command}`)
  }
})

test('flags and variables are each declared once', () => {
  const flags = specs.flatMap(([, s]) => (s.flag ? [s.flag] : []))
  const envs = specs.flatMap(([, s]) => (s.env ? [s.env] : []))
  assert.equal(new Set(flags).size, flags.length)
  assert.equal(new Set(envs).size, envs.length)
})

test('SidecarOptions has the table’s fields with their types (checked by the compiler)', () => {
  const options: SidecarOptions = {
    frontend: new URL('http://127.0.0.1:3000'),
    timeoutMs: 1,
    cacheKeyIgnoreParams: ['t'],
    dangerouslyAllowLocalIP: true,
    signingKey: 'k',
    adminToken: 't',
    nextVersion: 15,
  }
  // @ts-expect-error a table field keeps its type
  options.timeoutMs = '1'
  // @ts-expect-error a CLI-only option is not a field
  options.port = 1
  assert.ok(options)
})
