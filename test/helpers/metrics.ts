/**
 * Sums the samples of a series in Prometheus text, e.g. metric(text, 'x_total') or metric(text, 'y', { result: 'hit' }).
 * A series that is not there at all is an error, not a 0: a renamed metric must fail the test.
 */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels)
  let total = 0
  let found = false
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const have = Object.fromEntries([...(match[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]))
    if (wanted.every(([k, v]) => have[k] === v)) {
      total += Number(match[4])
      found = true
    }
  }
  if (!found) throw new Error(`no sample of ${name}${wanted.length ? JSON.stringify(labels) : ''} in /metrics`)
  return total
}
