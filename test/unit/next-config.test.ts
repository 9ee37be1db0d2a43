/**
 * Loading next.config as Next does: a config function gets `(phase, { defaultConfig })` with the
 * real defaults of the Next line served (Next's own `defaultConfig` is the oracle), and anything a
 * config throws becomes a ConfigError naming the file.
 */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '../../sidecar/errors.js'
import { nextDefaultConfig, resolveNextConfig } from '../../sidecar/next/images-config.js'
import { loadNextConfig } from '../../sidecar/next/next-config.js'
import { PROFILES, type NextLine } from '../../sidecar/next/next-version.js'
import { NEXT_LINES } from '../helpers/next-app.js'

/** Next's own `defaultConfig` (server/config-shared.js) of the installed package of that line. */
function nextsOwnDefaults(major: NextLine): Record<string, unknown> {
  const require = createRequire(join(NEXT_LINES[major], 'package.json'))
  return (require('./dist/server/config-shared.js') as { defaultConfig: Record<string, unknown> }).defaultConfig
}

function configFile(source: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'nis-config-')), 'next.config.mjs')
  writeFileSync(file, source)
  return file
}

describe('the defaultConfig a config function receives', () => {
  for (const major of ['16.5', '16.4', '15.5'] as const) {
    test(`Next ${major}: images are Next ${major}'s own defaultConfig.images`, () => {
      assert.deepEqual(nextDefaultConfig(major).images, nextsOwnDefaults(major).images)
    })
    test(`Next ${major}: every other key given is Next ${major}'s own value (experimental: the imgOpt* keys)`, () => {
      const ours = nextDefaultConfig(major)
      const theirs = nextsOwnDefaults(major)
      for (const [key, value] of Object.entries(ours)) {
        if (key === 'experimental') {
          const imgOpt = Object.fromEntries(Object.entries(theirs.experimental as object).filter(([k]) => k.startsWith('imgOpt')))
          assert.deepEqual(value, imgOpt)
        } else assert.deepEqual(value, theirs[key], key)
      }
    })
    test(`Next ${major}: a config spreading the whole defaultConfig is valid for that line`, async () => {
      const config = await loadNextConfig(configFile('export default (phase, { defaultConfig }) => ({ ...defaultConfig, images: { ...defaultConfig.images } })'), major)
      assert.doesNotThrow(() => resolveNextConfig(config, 'next.config', PROFILES[major]))
    })
  }
  test('a function extending the default deviceSizes gets them (Next 16)', async () => {
    const file = configFile('export default (phase, { defaultConfig }) => ({ images: { deviceSizes: [...defaultConfig.images.deviceSizes, 4096] } })')
    const config = await loadNextConfig(file, 16)
    assert.deepEqual((config.images as { deviceSizes: number[] }).deviceSizes, [640, 750, 828, 1080, 1200, 1920, 2048, 3840, 4096])
  })
  test('the line decides: Next 15 defaults start imageSizes at 16', async () => {
    const file = configFile('export default async (phase, { defaultConfig }) => ({ images: { imageSizes: defaultConfig.images.imageSizes } })')
    assert.deepEqual(((await loadNextConfig(file, 15)).images as { imageSizes: number[] }).imageSizes, [16, 32, 48, 64, 96, 128, 256, 384])
    assert.deepEqual(((await loadNextConfig(file, 16)).images as { imageSizes: number[] }).imageSizes, [32, 48, 64, 96, 128, 256, 384])
  })
  test('a config changing the defaultConfig it was given does not change the next one', async () => {
    const file = configFile('export default (phase, { defaultConfig }) => { defaultConfig.images.deviceSizes.push(1); return {} }')
    await loadNextConfig(file, 16).catch(() => undefined)
    assert.deepEqual(nextDefaultConfig(16).images.deviceSizes, [640, 750, 828, 1080, 1200, 1920, 2048, 3840])
  })
  test('the phase is the production server’s', async () => {
    const config = await loadNextConfig(configFile('export default (phase) => ({ basePath: phase === "phase-production-server" ? "/ok" : "/wrong" })'), 16)
    assert.equal(config.basePath, '/ok')
  })
})

describe('a config function that fails', () => {
  test('a TypeError thrown inside it is a ConfigError naming the file and the error', async () => {
    const file = configFile('export default (phase, { defaultConfig }) => ({ images: { deviceSizes: [...defaultConfig.nope.deviceSizes] } })')
    await assert.rejects(loadNextConfig(file, 16), (err: Error) => {
      assert.ok(err instanceof ConfigError, `${err.name}: ${err.message}`)
      assert.ok(err.message.includes(file))
      assert.match(err.message, /TypeError/)
      return true
    })
  })
  test('an async function that rejects is a ConfigError', async () => {
    const file = configFile('export default async () => { throw new Error("no secrets here") }')
    await assert.rejects(loadNextConfig(file, 16), (err: Error) => err instanceof ConfigError && /no secrets here/.test(err.message))
  })
})
