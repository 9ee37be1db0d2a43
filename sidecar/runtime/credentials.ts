/**
 * Query parameters that carry a request's authorisation, and URLs with their values hidden. Used
 * where such a parameter must not leave the cache key (--cache-key-ignore-params) and wherever a
 * source URL is logged or put on a span (a presigned URL's signature is a bearer credential).
 */

/**
 * Credential parameter names on common origins: S3 (SigV4 and SigV2), Google Cloud Storage,
 * CloudFront, Azure SAS, Akamai, imgix, and generic tokens and API keys.
 */
export const CREDENTIAL_PARAMS: readonly string[] = [
  'X-Amz-Signature', 'X-Amz-Credential', 'X-Amz-Security-Token', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Algorithm',
  'AWSAccessKeyId', 'Signature', 'Expires', 'Key-Pair-Id', 'Policy',
  'X-Goog-Signature', 'X-Goog-Credential', 'X-Goog-Date', 'X-Goog-Expires', 'X-Goog-SignedHeaders', 'X-Goog-Algorithm', 'GoogleAccessId',
  'sig', 'se', 'st', 'sp', 'skoid', 'sktid',
  'hdnts', 'hdnea', '__token__', 's',
  'token', 'access_token', 'id_token', 'auth', 'authorization', 'key', 'api_key', 'apikey', 'jwt', 'hmac', 'secret', 'password', 'session',
]

/** A name whose words say it is a credential, whatever the origin (`myToken`, `upload_sig`). */
export const CREDENTIAL_WORDS = /sig|token|cred|auth|expire|secret|passw|policy|session|jwt|hmac|api_?key|access_?key/i

const KNOWN = new Set(CREDENTIAL_PARAMS.map((n) => n.toLowerCase()))

/** Pure: whether a (decoded) query parameter name is credential-like, in any case. */
export function isCredentialParam(name: string): boolean {
  return KNOWN.has(name.toLowerCase()) || CREDENTIAL_WORDS.test(name)
}

/**
 * Credential parameters whose values are not secrets (when a URL was signed, for how long, how):
 * kept in logs, where they tell an operator why an origin refused a URL.
 */
const NOT_SECRET = new Set(['x-amz-date', 'x-amz-expires', 'x-amz-algorithm', 'x-amz-signedheaders', 'x-goog-date', 'x-goog-expires', 'x-goog-algorithm', 'x-goog-signedheaders', 'expires', 'se', 'st', 'sp'])

/** Pure: whether a parameter's value must not be logged: a credential-like name whose value is a secret. */
export function isSecretParam(name: string): boolean {
  return isCredentialParam(name) && !NOT_SECRET.has(name.toLowerCase())
}

/**
 * A query parameter as written (`?name=value`, `&name=value`), and one inside a percent-encoded URL (the
 * `url=` of an optimizer request), whose separators and `=` a client may escape or not (`%3Fname%3Dvalue`,
 * `%3Fname=value`, `&name%3Dvalue` all decode to the same source): its value ends at a separator of either form,
 * or at an escaped `?` (where the query of a URL nested in the value begins, to be read in turn).
 */
const RAW_PARAM = /([?&])([^=&?#\s"'<>]+)=([^&#\s"'<>]*)/g
const ENCODED_PARAM = /(%3F|%26|[?&])((?:(?!%3D|%26)[^=&?#\s"'<>])+)(%3D|=)((?:(?!%26|%23|%3F)[^&#\s"'<>])*)/gi
const USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/[^/?#@:\s]*:)[^/?#@\s]*@/gi

function decodedName(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '))
  } catch {
    // A malformed escape is compared as written.
    return raw
  }
}

/**
 * Pure: `text` (a URL, absolute or relative, or a message naming URLs) with the value of every
 * secret query parameter (see isSecretParam) replaced by `REDACTED`, also inside a percent-encoded URL (the
 * `url=` of an optimizer request), and a userinfo password; everything else as written, so a log
 * line still names the object.
 */
export function redactText(text: string): string {
  return text
    .replace(RAW_PARAM, (all, sep: string, name: string) => (isSecretParam(decodedName(name)) ? `${sep}${name}=REDACTED` : all))
    .replace(ENCODED_PARAM, (all, sep: string, name: string, eq: string) => (isSecretParam(decodedName(name)) ? `${sep}${name}${eq}REDACTED` : all))
    .replace(USERINFO, '$1REDACTED@')
}

/** A URL to log or put on a span: `redactText`. */
export const redactUrl = (url: string): string => redactText(url)

/**
 * An error to log or record on a span: a copy whose string fields (message, stack, …) and causes
 * are redacted; the original is left as it is (it may still be thrown or compared).
 */
export function redactError(err: unknown, depth = 0): unknown {
  if (typeof err === 'string') return redactText(err)
  if (!(err instanceof Error) || depth > 8) return err
  const copy = Object.create(Object.getPrototypeOf(err) as object) as Error
  for (const name of Object.getOwnPropertyNames(err)) {
    const descriptor = Object.getOwnPropertyDescriptor(err, name)!
    if ('value' in descriptor) descriptor.value = name === 'cause' ? redactError(descriptor.value, depth + 1) : typeof descriptor.value === 'string' ? redactText(descriptor.value) : descriptor.value
    Object.defineProperty(copy, name, descriptor)
  }
  return copy
}
