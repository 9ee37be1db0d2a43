/** Which peers count as this machine for the image port's /metrics (sidecar/server/ops.ts). */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isLoopbackAddress } from '../../sidecar/server/ops.js'

test('loopback peers: 127.0.0.0/8, ::1 and their IPv4-mapped spellings', () => {
  for (const address of ['127.0.0.1', '127.5.6.7', '::1', '::ffff:127.0.0.1', '::ffff:7f00:2']) assert.equal(isLoopbackAddress(address), true, address)
})

test('anything else is not: other addresses, mapped ones, unspecified, garbage, none', () => {
  for (const address of ['1.2.3.4', '10.0.0.1', '::ffff:1.2.3.4', '0.0.0.0', '::', 'fe80::1', '127.0.0.1.evil', '', undefined]) assert.equal(isLoopbackAddress(address), false, String(address))
})
