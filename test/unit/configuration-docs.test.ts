/**
 * docs/configuration.md's reference of the options is what the options table generates: a change to the
 * table without the page (or an edit of the page by hand) fails here. `UPDATE_DOCS=1` rewrites the page.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { REPO } from '../helpers/next-app.js'
import { withOptionsDocs } from '../../sidecar/cli/options-docs.js'
import { OPTIONS, type OptionSpec } from '../../sidecar/server/options-table.js'

const PAGE = join(REPO, 'docs/configuration.md')

test('docs/configuration.md’s options are the table’s', () => {
  const page = readFileSync(PAGE, 'utf8')
  const generated = withOptionsDocs(page)
  if (process.env.UPDATE_DOCS === '1') writeFileSync(PAGE, generated)
  assert.ok(
    page === generated,
    'docs/configuration.md differs from what sidecar/server/options-table.ts generates: UPDATE_DOCS=1 node --import tsx --test test/unit/configuration-docs.test.ts rewrites it',
  )
})

test('the page names every flag and variable of the table', () => {
  const page = readFileSync(PAGE, 'utf8')
  for (const spec of Object.values(OPTIONS) as OptionSpec[]) {
    if (spec.flag) assert.ok(page.includes(`\`--${spec.flag}\``), spec.flag)
    if (spec.env) assert.ok(page.includes(`\`${spec.env}`), spec.env)
  }
})
