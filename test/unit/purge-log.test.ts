/** The ids of the purge log records a process wrote itself (skipped when its follower replays the log). */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { OwnRecords } from '../../sidecar/cache/purge-log.js'
import { loggedPurges } from '../../sidecar/cache/types.js'

test('an own record is recognised once, then forgotten', () => {
  const own = new OwnRecords()
  own.add(7)
  assert.equal(own.take(7), true)
  assert.equal(own.take(7), false)
  assert.equal(own.take(8), false)
})

test('without a follower to take them, the newest 4,000 are kept and the oldest forgotten', () => {
  const own = new OwnRecords()
  for (let id = 1; id <= 10_000; id++) own.add(id)
  assert.equal(own.take(6000), false, 'an old id was kept')
  assert.equal(own.take(6001), true)
  assert.equal(own.take(10_000), true)
})

test('log records: purges to apply, and done records (hot copies to drop again) apart, each kind parsed', () => {
  assert.deepEqual(
    loggedPurges([
      { kind: 'sources', value: '["/a.png","/b.png"]' },
      { kind: 'done:sources', value: '["/a.png","/b.png"]' },
      { kind: 'prefix', value: '/img/' },
      { kind: 'done:prefix', value: '/img/' },
      { kind: 'all', value: '' },
    ]),
    { selectors: [{ sources: ['/a.png', '/b.png'] }, { prefix: '/img/' }, { all: true }], completed: [{ sources: ['/a.png', '/b.png'] }, { prefix: '/img/' }] },
  )
})
