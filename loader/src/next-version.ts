import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'

/**
 * Which Next.js lines the sidecar serves, decided once: the loader builds URLs as the app's major
 * does, and the server (which imports this module) applies that major's optimizer rules.
 */
export type NextMajor = 15 | 16
export const NEXT_MAJORS: readonly NextMajor[] = [15, 16]

/** Why a version was refused: the server adds its own remedy (a flag) to `before-15.5`. */
export type NextVersionRefusal = 'unreadable' | 'before-15.5' | 'unsupported'

export class NextVersionError extends Error {
  constructor(
    message: string,
    readonly refusal: NextVersionRefusal,
  ) {
    super(message)
    this.name = 'NextVersionError'
  }
}

export const SUPPORTED_NEXT = 'Next.js 15.5 and 16 are supported'

/**
 * The major for a Next version string (`next/package.json`'s `version`). Next 15 before 15.5 is
 * refused: its optimizer differs in ways the 15 profile does not reproduce.
 */
export function majorOfVersion(version: string, source: string): NextMajor {
  const match = /^(\d+)\.(\d+)\.(\d+)/.exec(version)
  if (!match) throw new NextVersionError(`${source}: cannot read a Next.js version from "${version}"`, 'unreadable')
  const [major, minor] = [Number(match[1]), Number(match[2])]
  if (major === 16) return 16
  if (major === 15 && minor >= 5) return 15
  if (major === 15) {
    throw new NextVersionError(
      `${source}: Next.js ${version} is not supported: the sidecar reproduces Next 15.5, the last 15 line. Upgrade the app to 15.5 (its image URLs keep their meaning).`,
      'before-15.5',
    )
  }
  throw new NextVersionError(`${source}: Next.js ${version} is not supported (${SUPPORTED_NEXT}).`, 'unsupported')
}

/**
 * The version of the `next` package that the app at `configPath` resolves (its directory's
 * node_modules, as `next build` there would), or undefined when none is installed there.
 */
export function detectNextVersion(configPath: string): string | undefined {
  const from = resolve(configPath)
  let manifest: string
  try {
    manifest = createRequire(from).resolve('next/package.json')
  } catch {
    return undefined
  }
  const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version?: unknown }
  return typeof version === 'string' ? version : undefined
}
