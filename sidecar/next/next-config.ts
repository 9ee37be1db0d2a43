import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { ConfigError } from '../errors.js'
import { importConfigModule } from './config-module.js'
import { nextDefaultConfig } from './images-config.js'
import type { NextLine, NextMajor } from './next-version.js'

/** The names Next looks for, in its order. */
export const CONFIG_FILES = ['next.config.js', 'next.config.mjs', 'next.config.cjs', 'next.config.ts', 'next.config.mts']

/** The phase Next passes to a config function when `next start` serves requests. */
const PHASE_PRODUCTION_SERVER = 'phase-production-server'

/** The next.config file in `dir`, if there is one. */
export function findNextConfig(dir: string): string | undefined {
  return CONFIG_FILES.map((name) => resolve(dir, name)).find((path) => existsSync(path))
}

/**
 * Loads a next.config file as Next does: ESM or CommonJS, TypeScript by Node's type stripping
 * (config-module.ts), and a
 * default export that may be an object, a promise, or a (possibly async) function of
 * `(phase, { defaultConfig })`, `defaultConfig` being the defaults of the Next line served.
 * Whatever the file throws is a ConfigError naming it.
 */
export async function loadNextConfig(path: string, nextVersion: NextMajor | NextLine = 16): Promise<Record<string, unknown>> {
  const file = resolve(path)
  if (!existsSync(file)) throw new ConfigError(`--config: no file at ${file}`)
  const config = await importConfigModule(file, async (mod) => {
    let config: unknown = mod.default ?? mod
    // CJS interop can wrap the export once more.
    if (config && typeof config === 'object' && 'default' in config && Object.keys(config).length === 1) {
      config = (config as { default: unknown }).default
    }
    try {
      if (typeof config === 'function') config = await config(PHASE_PRODUCTION_SERVER, { defaultConfig: nextDefaultConfig(nextVersion) })
      return await config
    } catch (err) {
      // A CommonJS name the config function uses is importConfigModule's to handle (it loads the file again).
      if (err instanceof ReferenceError) throw err
      const error = err as Error
      throw new ConfigError(`--config: ${file} failed: ${error?.name ?? 'Error'}: ${error?.message ?? String(err)}`)
    }
  })
  if (!config || typeof config !== 'object') {
    throw new ConfigError(`--config: ${file} must export an object or a function returning one`)
  }
  return config as Record<string, unknown>
}
