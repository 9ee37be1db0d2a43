import ipaddr from 'ipaddr.js'

/**
 * Next's `isPrivateIp`: IPv4-mapped IPv6 is unwrapped, then every range but ipaddr.js's
 * 'unicast' counts as private (loopback, RFC 1918, link-local incl. 169.254.169.254,
 * CGNAT, reserved, multicast, unique-local, 6to4, teredo, ...). Not an IP → false.
 */
export function isPrivateIp(ip: string): boolean {
  if (ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1)
  if (!ipaddr.isValid(ip)) return false
  try {
    let addr = ipaddr.parse(ip)
    if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
      addr = (addr as ipaddr.IPv6).toIPv4Address()
    }
    return addr.range() !== 'unicast'
  } catch {
    return false
  }
}
