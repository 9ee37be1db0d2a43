import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ConfigError } from '../errors.js'

const TYPESCRIPT = /\.[cm]?ts$/

/**
 * Whether this Node strips TypeScript types on import: 'strip' (22.18+, 24, 26 by default; 22.15–22.17
 * with --experimental-strip-types), 'transform' where --experimental-transform-types exists and is
 * given, false when turned off (--no-experimental-strip-types), undefined before Node knew of it.
 */
export const typeStripping = (features: { typescript?: string | false } = process.features as { typescript?: string | false }): string | false =>
  features.typescript ?? false

/**
 * Why a TypeScript config cannot be loaded here, with the fix; undefined when it can be. Pure: from
 * the Node version and what it reports in `process.features.typescript`.
 */
export function typeStrippingProblem(file: string, nodeVersion: string, stripping: string | false): string | undefined {
  if (stripping) return undefined
  return (
    `--config: ${file} is TypeScript, and Node ${nodeVersion} does not strip types here. ` +
    'Run Node 22.18 or later (22.15–22.17: set NODE_OPTIONS=--experimental-strip-types; and do not pass --no-experimental-strip-types), ' +
    'or compile the config to next.config.mjs'
  )
}

/** The error an ESM module gets for a name CommonJS defines and ESM does not. */
const COMMONJS_NAME = /^(__dirname|__filename|require) is not defined/

/**
 * Imports a next.config module as it is and hands it to `evaluate` (which calls a config function);
 * what `evaluate` throws passes through as it is, but for the ReferenceError below. TypeScript (.ts,
 * .mts, .cts) goes through Node's own type stripping — no tsx, esbuild or compiler at run time.
 * Stripping only erases types: syntax that needs code generated (enum, namespace, constructor
 * parameter properties) is refused by Node with ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX, and the error
 * names the rewrite; an import without its extension is not found (Node resolves specifiers as
 * written), and the error says so.
 *
 * Next compiles a next.config.ts to CommonJS (SWC, its default), so such a config may use
 * `__dirname`, `__filename` and `require`; stripped, it stays ESM, where they are not defined. When
 * it fails on one of them, it is loaded once more (a fresh module) with the three defined for this
 * file as globals while it loads and its function runs, and removed after.
 */
export async function importConfigModule<T>(file: string, evaluate: (mod: Record<string, unknown>) => Promise<T>): Promise<T> {
  const typescript = TYPESCRIPT.test(file)
  if (typescript) {
    const problem = typeStrippingProblem(file, process.version, typeStripping())
    if (problem) throw new ConfigError(problem)
  }
  const restoreWarnings = typescript ? quietTypelessPackageWarning() : () => {}
  const load = async (url: string) => evaluate((await import(url)) as Record<string, unknown>)
  try {
    try {
      return await load(pathToFileURL(file).href)
    } catch (err) {
      if (!typescript || !(err instanceof ReferenceError) || !COMMONJS_NAME.test(err.message)) throw err
      const removeNames = defineCommonJsNames(file)
      try {
        return await load(`${pathToFileURL(file).href}?commonjs-names`)
      } finally {
        removeNames()
      }
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const { code, message } = err as { code?: string; message?: string }
    if (typescript && code === 'ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX') {
      throw new ConfigError(
        `--config: could not load ${file}: ${message} (Node strips TypeScript types and generates no code). ` +
          'Write it with erasable syntax only — a const object `as const` instead of an enum, a module instead of a namespace, ' +
          'fields declared in the class body instead of constructor parameter properties — or compile it to next.config.mjs',
      )
    }
    if (typescript && (code === 'ERR_MODULE_NOT_FOUND' || code === 'ERR_UNSUPPORTED_DIR_IMPORT')) {
      throw new ConfigError(`--config: could not load ${file}: ${message} (Node resolves a TypeScript config's imports as written: give relative imports their extension, e.g. './images.ts')`)
    }
    throw new ConfigError(`--config: could not load ${file}: ${message ?? String(err)}`)
  } finally {
    restoreWarnings()
  }
}

/** Defines CommonJS's `__dirname`, `__filename` and `require` for `file` as globals; returns what removes them. */
function defineCommonJsNames(file: string): () => void {
  const names = { __dirname: dirname(file), __filename: file, require: createRequire(file) }
  const global = globalThis as Record<string, unknown>
  const defined = Object.keys(names).filter((name) => !(name in global))
  for (const name of defined) global[name] = names[name as keyof typeof names]
  return () => {
    for (const name of defined) delete global[name]
  }
}

/**
 * While the config loads, Node's MODULE_TYPELESS_PACKAGE_JSON warning ("add \"type\": \"module\" to
 * package.json") is not printed: a Next app's next.config.ts is ESM in a package.json without a
 * type as a rule (Next compiles it), and the advice would be to change the app for the sidecar's
 * sake, at every start. Every other warning still shows. Returns the function that restores.
 */
function quietTypelessPackageWarning(): () => void {
  const emitWarning = process.emitWarning
  process.emitWarning = function (this: NodeJS.Process, warning: string | Error, ...rest: unknown[]) {
    const options = rest[0] as { code?: string } | string | undefined
    const code = typeof options === 'object' ? options.code : typeof rest[1] === 'string' ? rest[1] : (warning as { code?: string }).code
    if (code === 'MODULE_TYPELESS_PACKAGE_JSON') return
    return (emitWarning as (...args: unknown[]) => void).call(this, warning, ...rest)
  } as typeof process.emitWarning
  return () => {
    process.emitWarning = emitWarning
  }
}
