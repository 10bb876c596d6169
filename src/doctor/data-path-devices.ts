/** `cluster devices`: this machine's network interfaces as the data path sees them, which one `serve --discover` would
 * take and why, and the RDMA devices with their ports' state. Pure over injected sources, so every branch is tested. */
import type { NetworkInterfaceInfo } from 'node:os'
import { isLinkLocal, linkLocalInterfaces } from '../discovery/link-local.ts'
import type { IbvPort } from './macos-parsers.ts'

export interface InterfaceLine {
  name: string
  addresses: string[]
  /** `serve --discover` would use this interface (its first link-local IPv4 address). */
  picked: boolean
  /** Why it is, or is not, the one. */
  why: string
}

export interface DevicesReport {
  interfaces: InterfaceLine[]
  /** RDMA devices and ports; null when this machine has no way to list them. */
  rdma: IbvPort[] | null
  /** What to do when nothing can carry a cluster. */
  hint: string | null
}

export function describeDevices(
  source: () => NodeJS.Dict<NetworkInterfaceInfo[]>,
  rdma: IbvPort[] | null,
  iface?: string,
): DevicesReport {
  const all = source()
  const pick = linkLocalInterfaces(iface, source)[0] ?? null
  const interfaces: InterfaceLine[] = Object.entries(all)
    .filter(([, addresses]) => (addresses ?? []).some((a) => !a.internal))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, addresses]) => {
      const v4 = (addresses ?? []).filter((a) => a.family === 'IPv4' && !a.internal).map((a) => a.address)
      const linkLocal = v4.filter(isLinkLocal)
      const picked = pick?.name === name
      let why: string
      if (picked) why = `link-local ${pick!.address}: the data path (--discover beacons and sealed links bind here)`
      else if (iface && name !== iface) why = `not --iface ${iface}`
      else if (linkLocal.length) why = `link-local too, but ${pick?.name} sorts first (pick it with --iface ${name})`
      else if (v4.length) why = 'no link-local (169.254/16) address: a routed network, never used by --discover'
      else why = 'no IPv4 address'
      return { name, addresses: v4, picked, why }
    })
  const hint = pick
    ? null
    : iface
      ? `--iface ${iface} has no link-local IPv4 address: connect the Thunderbolt cable (macOS gives bridge0 a 169.254 address), or name another interface`
      : 'no interface has a link-local (169.254/16) address: connect the Thunderbolt cable between the Macs, or use serve --peers with routed addresses'
  return { interfaces, rdma, hint }
}

export function formatDevices(r: DevicesReport): string[] {
  const lines = r.interfaces.map(
    (i) => `${i.picked ? '*' : ' '} ${i.name.padEnd(10)} ${(i.addresses.join(', ') || '-').padEnd(32)} ${i.why}`,
  )
  if (r.hint) lines.push(`  ${r.hint}`)
  if (r.rdma === null)
    lines.push('  RDMA: this machine cannot list RDMA devices (no ibv_devinfo, no /sys/class/infiniband)')
  else if (r.rdma.length === 0) lines.push('  RDMA: no devices (rdma-ping and --tp-transport jaccl need one)')
  else for (const p of r.rdma) lines.push(`  RDMA ${p.device} port ${p.port}: ${p.state}`)
  return lines
}
