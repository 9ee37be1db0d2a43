import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ConfigError } from '../errors.js'
import { nextDefaultConfig } from './images-config.js'
import type { NextMajor } from './next-version.js'

/** The names Next looks for, in its order. */
export const CONFIG_FILES = ['next.config.js', 'next.config.mjs', 'next.config.cjs', 'next.config.ts', 'next.config.mts']

/** The phase Next passes to a config function when `next start` serves requests. */
const PHASE_PRODUCTION_SERVER = 'phase-production-server'

/** The next.config file in `dir`, if there is one. */
export function findNextConfig(dir: string): string | undefined {
  return CONFIG_FILES.map((name) => resolve(dir, name)).find((path) => existsSync(path))
}

/**
 * Loads a next.config file as Next does: ESM or CommonJS, TypeScript through tsx, and a
 * default export that may be an object, a promise, or a (possibly async) function of
 * `(phase, { defaultConfig })`, `defaultConfig` being the defaults of the Next line served.
 * Whatever the file throws is a ConfigError naming it.
 */
export async function loadNextConfig(path: string, nextVersion: NextMajor = 16): Promise<Record<string, unknown>> {
  const file = resolve(path)
  if (!existsSync(file)) throw new ConfigError(`--config: no file at ${file}`)
  let mod: Record<string, unknown>
  try {
    if (/\.m?ts$/.test(file)) {
      const { tsImport } = await import('tsx/esm/api')
      mod = (await tsImport(pathToFileURL(file).href, import.meta.url)) as Record<string, unknown>
    } else {
      mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>
    }
  } catch (err) {
    throw new ConfigError(`--config: could not load ${file}: ${(err as Error).message}`)
  }
  let config: unknown = mod.default ?? mod
  // tsx and CJS interop can wrap the export once more.
  if (config && typeof config === 'object' && 'default' in config && Object.keys(config).length === 1) {
    config = (config as { default: unknown }).default
  }
  try {
    if (typeof config === 'function') config = await config(PHASE_PRODUCTION_SERVER, { defaultConfig: nextDefaultConfig(nextVersion) })
    config = await config
  } catch (err) {
    const error = err as Error
    throw new ConfigError(`--config: ${file} failed: ${error?.name ?? 'Error'}: ${error?.message ?? String(err)}`)
  }
  if (!config || typeof config !== 'object') {
    throw new ConfigError(`--config: ${file} must export an object or a function returning one`)
  }
  return config as Record<string, unknown>
}
