import { majorOfVersion as majorOf, NextVersionError, SUPPORTED_NEXT as SUPPORTED, type NextMajor } from 'next-image-sidecar-loader/next-version'
import { ConfigError } from '../errors.js'
import type { LocalPattern } from './match.js'

// Which versions are served is one rule, kept in the frontend package (its loader needs it too).
export { detectNextVersion, NEXT_MAJORS, type NextMajor } from 'next-image-sidecar-loader/next-version'

/**
 * The optimizer lines the sidecar reproduces, each from its reference release: the loader only needs
 * the major (16.5's `getImgProps` builds the URLs 16.4's does), the optimizer needs the line.
 */
export type NextLine = '15.5' | '16.4' | '16.5'
export const NEXT_LINES: readonly NextLine[] = ['15.5', '16.4', '16.5']

/**
 * Everything the sidecar does differently for one Next line: config defaults and schema, the
 * rules of `validateParams`, and how the upstream fetch behaves. The rest of the optimizer
 * (negotiation, sharp settings, headers, ETags) is the same in 15.5 and 16.4.
 */
export interface NextProfile {
  major: NextMajor
  line: NextLine
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
    /**
     * 16.5 follows a redirect of a relative source (`fetchInternalImage`): each `Location` checked
     * by `validateUrlParam(…, isRedirect)`, a relative one fetched from the frontend again, an
     * absolute one as an external image, all within `images.maximumRedirects` (508 past it).
     * Before 16.5 an internal 3xx is an invalid response.
     */
    followInternalRedirects: boolean
  }
  /** `getMaxAge`'s cap on an upstream's max-age, s (16.5: 2^31, RFC 9111 §1.2.2); undefined: none. */
  maxDeltaSeconds: number | undefined
  /**
   * 16.5's `getSupportedMimeType` answers '' when no format is configured (or safe mode filtered them
   * all away); before, @hapi/accept then returned the client's own first preference.
   */
  noFormatsNoType: boolean
  /** 16.5 reads `experimental.imgOptSafeMode` (its format filter reaches responses). */
  safeMode: boolean
}

/** 16.5's `MAX_DELTA_SECONDS` (get-max-age.js). */
const MAX_DELTA_SECONDS = 2 ** 31

const PROFILE_16_4: NextProfile = {
  major: 16,
  line: '16.4',
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
  upstream: { fetch: 'per-hop', checkInternalStatus: true, followInternalRedirects: false },
  maxDeltaSeconds: undefined,
  noFormatsNoType: false,
  safeMode: false,
}

export const PROFILES: Record<NextLine, NextProfile> = {
  '15.5': {
    major: 15,
    line: '15.5',
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
    upstream: { fetch: 'whatwg-fetch', checkInternalStatus: false, followInternalRedirects: false },
    maxDeltaSeconds: undefined,
    noFormatsNoType: false,
    safeMode: false,
  },
  '16.4': PROFILE_16_4,
  // 16.5.0 against 16.4.6: only what reaches a response (see docs/deviations.md, Next.js versions).
  '16.5': {
    ...PROFILE_16_4,
    line: '16.5',
    reference: '16.5.0',
    upstream: { ...PROFILE_16_4.upstream, followInternalRedirects: true },
    maxDeltaSeconds: MAX_DELTA_SECONDS,
    noFormatsNoType: true,
    safeMode: true,
  },
}

/** The line a major names: its newest (16 is 16.5, 15 is 15.5). */
export const LINE_OF_MAJOR: Record<NextMajor, NextLine> = { 15: '15.5', 16: '16.5' }

/** A line, or a major standing for its newest line (what `createSidecar({ nextVersion })` takes). */
export function lineOf(version: NextMajor | NextLine): NextLine {
  return typeof version === 'number' ? LINE_OF_MAJOR[version] : version
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

/**
 * The line of an installed Next version: 16.5 and later 16.x get 16.5's rules, 16.0–16.4 keep
 * 16.4.6's, 15.5.x 15.5's (anything else is refused as by `majorOfVersion`).
 */
export function lineOfVersion(version: string, source: string): NextLine {
  const major = majorOfVersion(version, source)
  if (major === 15) return '15.5'
  const minor = Number(/^\d+\.(\d+)/.exec(version)![1])
  return minor >= 5 ? '16.5' : '16.4'
}

/**
 * `--next-version` / NEXT_VERSION: a major (15, 16: its newest line), a line (16.4, 16.5, 15.5) or a
 * full version (16.4.6, 15.5.3).
 */
export function parseNextVersion(raw: string, source: string): NextLine {
  if (/^\d+$/.test(raw)) {
    const major = Number(raw)
    if (major === 15 || major === 16) return LINE_OF_MAJOR[major]
    throw new ConfigError(`${source}: Next.js ${raw} is not supported (${SUPPORTED}); expected 15, 16, 16.4 or 16.5`)
  }
  if (/^\d+\.\d+$/.test(raw)) return lineOfVersion(`${raw}.0`, source)
  return lineOfVersion(raw, source)
}
