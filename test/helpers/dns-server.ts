import { createSocket } from 'node:dgram'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'

/**
 * A tiny authoritative DNS server on loopback UDP, standing in for Docker's embedded DNS
 * (127.0.0.11): it answers A queries from `records` (changeable while it runs: a container
 * recreated with a new address) and NXDOMAIN for names it does not hold (a container that is
 * not running). Every other query type gets an empty answer. `queries` counts what was asked.
 */
export interface DnsServer {
  port: number
  records: Map<string, string>
  queries: Array<{ name: string; type: number }>
  close(): Promise<void>
}

export async function startDnsServer(records: Record<string, string> = {}): Promise<DnsServer> {
  const socket = createSocket('udp4')
  const table = new Map(Object.entries(records))
  const queries: DnsServer['queries'] = []
  socket.on('message', (query, peer) => {
    // Header (12 bytes), then one question: length-prefixed labels, a zero byte, QTYPE, QCLASS.
    let offset = 12
    const labels: string[] = []
    while (query[offset]! > 0) {
      labels.push(query.subarray(offset + 1, offset + 1 + query[offset]!).toString('ascii'))
      offset += query[offset]! + 1
    }
    const questionEnd = offset + 5
    const name = labels.join('.').toLowerCase()
    const type = query.readUInt16BE(offset + 1)
    queries.push({ name, type })
    const address = table.get(name)
    const header = Buffer.alloc(12)
    query.copy(header, 0, 0, 2) // the query's id
    // QR, the query's RD, RA; RCODE 3 (NXDOMAIN) for an unknown name.
    header.writeUInt16BE(0x8000 | (query.readUInt16BE(2) & 0x0100) | 0x0080 | (address === undefined ? 3 : 0), 2)
    header.writeUInt16BE(1, 4)
    const answer = address !== undefined && type === 1
    header.writeUInt16BE(answer ? 1 : 0, 6)
    const parts = [header, query.subarray(12, questionEnd)]
    if (answer) {
      const record = Buffer.alloc(16)
      record.writeUInt16BE(0xc00c, 0) // the name: a pointer to the question's
      record.writeUInt16BE(1, 2) // A
      record.writeUInt16BE(1, 4) // IN
      record.writeUInt32BE(1, 6) // TTL 1 s: the resolver's own `valid=` decides how long nginx keeps it
      record.writeUInt16BE(4, 10)
      address.split('.').forEach((octet, i) => record.writeUInt8(Number(octet), 12 + i))
      parts.push(record)
    }
    socket.send(Buffer.concat(parts), peer.port, peer.address)
  })
  socket.bind(0, '127.0.0.1')
  await once(socket, 'listening')
  return {
    port: (socket.address() as AddressInfo).port,
    records: table,
    queries,
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  }
}
