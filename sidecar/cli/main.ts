#!/usr/bin/env node
/** The next-image-sidecar command: `warm`, or serve. */
import { ConfigError } from '../errors.js'
import { serve } from './serve.js'
import { warm } from './warm-command.js'
import { purge } from './purge-command.js'

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'warm') process.exitCode = await warm(argv.slice(1))
  else if (argv[0] === 'purge') process.exitCode = await purge(argv.slice(1))
  else await serve(argv)
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const message = err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? (err as Error).message : ((err as Error).stack ?? String(err))
  process.stderr.write(`next-image-sidecar: ${message}\n`)
  process.exit(1)
})
