/** Link-local IPv4 (169.254/16) interfaces: where a Thunderbolt bridge (or a veth in tests) puts two machines on one cable. */
import { networkInterfaces } from 'node:os'

export interface LinkLocalInterface {
  name: string
  address: string
  /** Broadcast address of the interface's subnet (169.254.255.255 for a /16). */
  broadcast: string
}

export function ipv4ToNumber(address: string): number {
  const parts = address.split('.').map(Number)
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255))
    throw new TypeError(`not an IPv4 address: ${address}`)
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0
}

export function numberToIpv4(value: number): string {
  return [24, 16, 8, 0].map((s) => (value >>> s) & 255).join('.')
}

export const isLinkLocal = (address: string): boolean => /^169\.254\.\d{1,3}\.\d{1,3}$/.test(address)

/** Wired link-local IPv4 interfaces, sorted by name; `only` restricts to one interface name. */
export function linkLocalInterfaces(only?: string, source = networkInterfaces): LinkLocalInterface[] {
  const out: LinkLocalInterface[] = []
  for (const [name, addresses] of Object.entries(source())) {
    if (only && name !== only) continue
    for (const a of addresses ?? []) {
      if (a.family !== 'IPv4' || a.internal || !isLinkLocal(a.address)) continue
      const mask = ipv4ToNumber(a.netmask)
      out.push({ name, address: a.address, broadcast: numberToIpv4((ipv4ToNumber(a.address) & mask) | (~mask >>> 0)) })
    }
  }
  return out.sort((a, b) => a.name.localeCompare(b.name) || ipv4ToNumber(a.address) - ipv4ToNumber(b.address))
}
