/** Cache URLs for one Redis, a Cluster and Sentinel. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isRedisUrl, parseRedisUrl, redactRedisUrl } from '../../sidecar/cache/redis-url.js'
import { ConfigError } from '../../sidecar/errors.js'

test('redis:// and rediss:// are one server, passed through as they are', () => {
  assert.deepEqual(parseRedisUrl('redis://:pw@127.0.0.1:6379/2'), { kind: 'single', url: 'redis://:pw@127.0.0.1:6379/2' })
})
test('redis+cluster:// lists seed nodes, with credentials and TLS', () => {
  assert.deepEqual(parseRedisUrl('rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001'), {
    kind: 'cluster',
    nodes: [{ host: '10.0.0.1', port: 7000 }, { host: '10.0.0.2', port: 7001 }],
    tls: true,
    username: 'app',
    password: 's@cret',
  })
})
test('redis+sentinel:// lists the Sentinels, then the master’s name and an optional database', () => {
  assert.deepEqual(parseRedisUrl('redis+sentinel://:pw@s1:26379,[::1]:26380/mymaster/3'), {
    kind: 'sentinel',
    sentinels: [{ host: 's1', port: 26379 }, { host: '::1', port: 26380 }],
    masterName: 'mymaster',
    database: 3,
    tls: false,
    password: 'pw',
  })
})
for (const [url, why] of [
  ['redis+sentinel://s1:26379', 'no master name'],
  ['redis+sentinel://s1:26379/m/x', 'a database that is not a number'],
  ['redis+cluster://n1:7000/2', 'a database on a Cluster'],
  ['redis+cluster://n1', 'a node without a port'],
  ['redis+cluster://', 'no node at all'],
] as const) {
  test(`refused with a clear message: ${why}`, () => {
    assert.throws(() => parseRedisUrl(url), (err: unknown) => err instanceof ConfigError && err.message.includes('--cache'))
  })
}
test('which URLs are Redis ones', () => {
  for (const url of ['redis://h:1', 'rediss://h:1', 'redis+cluster://h:1', 'rediss+sentinel://h:1/m']) assert.equal(isRedisUrl(url), true, url)
  for (const url of ['sqlite://x', 'memory://', 'redisx://h:1']) assert.equal(isRedisUrl(url), false, url)
})
test('passwords never reach logs', () => {
  assert.equal(redactRedisUrl('redis+cluster://app:secret@n1:7000,n2:7001'), 'redis+cluster://app:***@n1:7000,n2:7001')
  assert.equal(redactRedisUrl('redis+sentinel://:secret@s1:26379/m'), 'redis+sentinel://:***@s1:26379/m')
})
test('redaction hides the password whatever it holds, and keeps the user name', () => {
  assert.equal(redactRedisUrl('redis://default:S3cretPass@127.0.0.1:1'), 'redis://default:***@127.0.0.1:1')
  assert.equal(redactRedisUrl('redis://default:S3cr/et@Pass@127.0.0.1:1/2'), 'redis://default:***@127.0.0.1:1/2')
  assert.equal(redactRedisUrl('redis://S3cretPass@h:1'), 'redis://:***@h:1')
  assert.equal(redactRedisUrl('redis:/default:S3cretPass@h:1'), 'redis:/default:***@h:1')
  assert.equal(redactRedisUrl('redis://h:1'), 'redis://h:1')
})
for (const url of [
  'redis+cluster://default:S3cretPass@127.0.0.1',
  'redis+sentinel://default:S3cretPass@h:1',
  'redis+sentinel://default:S3cretPass@h:1/m/x',
  'redis://default:S3cretPass@127.0.0.1:99999',
  'redis://default:S3cr/etPass@[bad:1',
]) {
  test(`a refused URL is a ConfigError without its password: ${url.replace(/S3cr\/?etPass/, '…')}`, () => {
    assert.throws(() => parseRedisUrl(url), (err: unknown) => err instanceof ConfigError && err.message.includes('--cache') && !err.message.includes('S3cret'))
  })
}
