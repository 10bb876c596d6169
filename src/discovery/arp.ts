/** The ARP table as a fallback peer source: neighbours seen on an interface. Addresses from here are only candidates —
 * a candidate becomes a peer after its signed beacon or a handshake with a pinned key checks out. */
import { readFileSync } from 'node:fs'

export interface Neighbour {
  address: string
  mac: string
  iface: string
}

/** Linux /proc/net/arp: "IP address  HW type  Flags  HW address  Mask  Device" (flags 0x0 = incomplete). */
export function parseProcNetArp(text: string): Neighbour[] {
  return text
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length >= 6 && f[2] !== '0x0' && f[3] !== '00:00:00:00:00:00')
    .map((f) => ({ address: f[0]!, mac: f[3]!.toLowerCase(), iface: f[5]! }))
}

/** `ip neigh show`: "169.254.1.2 dev veth0 lladdr aa:bb:.. REACHABLE". */
export function parseIpNeigh(text: string): Neighbour[] {
  const out: Neighbour[] = []
  for (const line of text.split('\n')) {
    const m = /^(\d+\.\d+\.\d+\.\d+) dev (\S+) lladdr ([0-9a-f:]+) (\S+)/i.exec(line.trim())
    if (m && m[4] !== 'FAILED' && m[4] !== 'INCOMPLETE')
      out.push({ address: m[1]!, iface: m[2]!, mac: m[3]!.toLowerCase() })
  }
  return out
}

/** macOS `arp -a -n`: "? (169.254.3.4) at 1a:2b:3c:4d:5e:6f on bridge0 ifscope [bridge]". */
export function parseArpA(text: string): Neighbour[] {
  const out: Neighbour[] = []
  for (const line of text.split('\n')) {
    const m = /\((\d+\.\d+\.\d+\.\d+)\) at ([0-9a-f:]+) on (\S+)/i.exec(line)
    if (m) out.push({ address: m[1]!, mac: m[2]!.toLowerCase(), iface: m[3]! })
  }
  return out
}

/** Neighbours on `iface` from the platform's table (every external command under a timeout: some hang). */
export function readNeighbours(iface: string): Neighbour[] {
  let all: Neighbour[] = []
  if (process.platform === 'linux') {
    try {
      all = parseProcNetArp(readFileSync('/proc/net/arp', 'utf8'))
    } catch {
      all = parseIpNeigh(run(['ip', 'neigh', 'show']))
    }
  } else if (process.platform === 'darwin') {
    all = parseArpA(run(['arp', '-a', '-n']))
  }
  return all.filter((n) => n.iface === iface)
}

function run(cmd: string[]): string {
  try {
    const r = Bun.spawnSync(cmd, { stdout: 'pipe', stderr: 'ignore', timeout: 2000 })
    return r.exitCode === 0 ? r.stdout.toString() : ''
  } catch {
    return ''
  }
}
