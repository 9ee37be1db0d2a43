import { majorOfVersion as majorOf, NextVersionError, SUPPORTED_NEXT as SUPPORTED, type NextMajor } from 'next-image-sidecar-loader/next-version'
import { ConfigError } from '../errors.js'
import type { LocalPattern } from './match.js'

// Which versions are served is one rule, kept in the frontend package (its loader needs it too).
export { detectNextVersion, NEXT_MAJORS, type NextMajor } from 'next-image-sidecar-loader/next-version'

/**
 * Everything the sidecar does differently for one Next line: config defaults and schema, the
 * rules of `validateParams`, and how the upstream fetch behaves. The rest of the optimizer
 * (negotiation, sharp settings, headers, ETags) is the same in 15.5 and 16.4.
 */
export interface NextProfile {
  major: NextMajor
  /** The release whose optimizer the profile reproduces (its `next start` is the parity oracle). */
  reference: string
  defaults: {
    imageSizes: number[]
    /** undefined: any quality 1–100 is accepted (Next 15 without `images.qualities`). */
    qualities: number[] | undefined
    minimumCacheTTL: number
    /** undefined: every local path and query is allowed (Next 15 without `images.localPatterns`). */
    localPatterns: LocalPattern[] | undefined
    /** Redirects followed for an absolute URL. */
    maximumRedirects: number
  }
  /** `experimental` keys steering sharp that the line reads (others are ignored, as it ignores them). */
  sharpKeys: ReadonlySet<'imgOptOperationCache' | 'imgOptMozjpeg'>
  /** Prefixes of statically imported media: served immutable, and always allowed once localPatterns are set. */
  staticMedia: string[]
  upstream: {
    /**
     * 16 follows redirects itself, each hop with its own 7 s and a 508 past the limit; 15 uses
     * `fetch`, whose one timeout covers every hop and whose redirect failures are plain errors (500).
     */
    fetch: 'per-hop' | 'whatwg-fetch'
    /** 16 refuses a non-2xx internal response; 15 hands its body to the image checks. */
    checkInternalStatus: boolean
  }
}

export const PROFILES: Record<NextMajor, NextProfile> = {
  15: {
    major: 15,
    reference: '15.5.29',
    defaults: {
      imageSizes: [16, 32, 48, 64, 96, 128, 256, 384],
      qualities: undefined,
      minimumCacheTTL: 60,
      localPatterns: undefined,
      // What fetch follows (the WHATWG fetch standard's limit); Next 15 has no setting for it.
      maximumRedirects: 20,
    },
    sharpKeys: new Set(),
    staticMedia: ['/_next/static/media'],
    upstream: { fetch: 'whatwg-fetch', checkInternalStatus: false },
  },
  16: {
    major: 16,
    reference: '16.4.6',
    defaults: {
      imageSizes: [32, 48, 64, 96, 128, 256, 384],
      qualities: [75],
      minimumCacheTTL: 14400,
      localPatterns: [{ pathname: '**', search: '' }],
      maximumRedirects: 3,
    },
    sharpKeys: new Set(['imgOptOperationCache', 'imgOptMozjpeg']),
    staticMedia: ['/_next/static/media', '/_next/static/immutable/media'],
    upstream: { fetch: 'per-hop', checkInternalStatus: true },
  },
}

/**
 * The profile for a Next version string (`next/package.json`'s `version`), as a ConfigError when
 * refused; before 15.5 the sidecar also offers its flag.
 */
export function majorOfVersion(version: string, source: string): NextMajor {
  try {
    return majorOf(version, source)
  } catch (err) {
    if (!(err instanceof NextVersionError)) throw err
    const remedy = err.refusal === 'before-15.5' ? " Or pass --next-version 15 to serve it with 15.5's semantics anyway." : ''
    throw new ConfigError(err.message + remedy)
  }
}

/** `--next-version` / NEXT_VERSION: a major (15, 16) or a full version (15.5.3). */
export function parseNextVersion(raw: string, source: string): NextMajor {
  if (/^\d+$/.test(raw)) {
    const major = Number(raw)
    if (major === 15 || major === 16) return major
    throw new ConfigError(`${source}: Next.js ${raw} is not supported (${SUPPORTED}); expected 15 or 16`)
  }
  return majorOfVersion(raw, source)
}
