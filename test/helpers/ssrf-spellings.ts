/**
 * Relative `url` values that start with a single `/` (so they pass as relative) but that WHATWG
 * URL parsing resolves to `host`: it reads `\` as `/` and drops tab, CR and LF anywhere. Each must
 * reach the frontend's origin or nothing. The percent-encoded spellings stay paths under WHATWG
 * parsing; they are here so that no decoding step turns them into a host later.
 */
export function relativeSpellingsTo(host: string): string[] {
  return [
    `/\\${host}/secret.jpg`,
    `/\\/${host}/secret.jpg`,
    `/\\\\${host}/secret.jpg`,
    `/\t/${host}/secret.jpg`,
    `/\n/${host}/secret.jpg`,
    `/\r/${host}/secret.jpg`,
    `/\r\n/${host}/secret.jpg`,
    `/\t\\${host}/secret.jpg`,
    `/\\\t${host}/secret.jpg`,
    `/\t\t/${host}/secret.jpg`,
    `/%5C${host}/secret.jpg`,
    `/%5c/${host}/secret.jpg`,
    `/%2F%2F${host}/secret.jpg`,
    `/%2f/${host}/secret.jpg`,
    `/%09/${host}/secret.jpg`,
    `/\\${host}/secret.jpg?w=1`,
    `/\\${host}`,
    `/\\user:pass@${host}/secret.jpg`,
  ]
}
