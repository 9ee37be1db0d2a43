/**
 * The SQLite file deleted under an open store (its directory removed, a volume emptied) is opened again at
 * its path — each time it happens, not only the first — and a closed store watches nothing: it neither
 * recreates a file removed after close() (review find: the second deletion went unnoticed,
 * and a closed store brought the file back).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SqliteStore } from '../../sidecar/cache/sqlite-store.js'
import { silentLogger } from '../helpers/sidecar.js'
import { waitUntil } from '../helpers/wait.js'
import { setTimeout as sleep } from 'node:timers/promises'

const limits = { maxSize: 10_000_000, maxEntrySize: 1_000_000 }

test('a file deleted twice under an open store is opened again each time', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nis-replaced-'))
  const path = join(dir, 'cache', 'cache.sqlite')
  const store = new SqliteStore(path, limits, silentLogger)
  try {
    await store.ping()
    for (let round = 1; round <= 2; round++) {
      rmSync(join(dir, 'cache'), { recursive: true, force: true })
      await waitUntil(() => existsSync(path), `the file to be opened again after deletion ${round}`, 10_000)
      await store.ping()
    }
  } finally {
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a closed store never brings its file back', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nis-replaced-'))
  const path = join(dir, 'cache', 'cache.sqlite')
  const store = new SqliteStore(path, limits, silentLogger)
  await store.ping()
  await store.close()
  rmSync(join(dir, 'cache'), { recursive: true, force: true })
  // Absence can only be watched for a while: over two of the store's file checks (1 s each).
  const until = Date.now() + 2_500
  while (Date.now() < until) {
    assert.equal(existsSync(path), false, 'the closed store created its file again')
    await sleep(100)
  }
  rmSync(dir, { recursive: true, force: true })
})
