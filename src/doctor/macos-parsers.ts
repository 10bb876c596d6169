/** Parsers for the macOS tools doctor reads: rdma_ctl, ibv_devinfo, system_profiler SPThunderboltDataType, sw_vers. */

/** One parser for `rdma_ctl status`, shared with the trust layer's capability gate. */
export { parseRdmaCtlStatus } from '../trust/rdma-gate.ts'

export interface IbvPort {
  device: string
  port: number
  state: string
}

/** `ibv_devinfo` blocks: "hca_id: NAME" then "port: N" with "state: PORT_ACTIVE (4)". */
export function parseIbvDevinfo(output: string): IbvPort[] {
  const ports: IbvPort[] = []
  let device = ''
  let port = -1
  for (const line of output.split('\n')) {
    const hca = /^\s*hca_id:\s*(\S+)/.exec(line)
    if (hca) {
      device = hca[1]!
      continue
    }
    const p = /^\s*port:\s*(\d+)/.exec(line)
    if (p) {
      port = Number(p[1])
      continue
    }
    const s = /^\s*state:\s*(\S+)/.exec(line)
    if (s && device && port >= 0) {
      ports.push({ device, port, state: s[1]! })
      port = -1
    }
  }
  return ports
}

/** `ibv_devices` table: a header, a dashed line, then "NAME  GUID" rows. */
export function parseIbvDevices(output: string): string[] {
  return output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('device') && !l.startsWith('---'))
    .map((l) => l.split(/\s+/)[0]!)
}

export interface ThunderboltPort {
  name: string
  /** Highest link speed seen on the port, in Gb/s (TB4 = 40, TB5 = 80 or 120). */
  speedGbps: number | null
}

/** `system_profiler SPThunderboltDataType`: "Speed: Up to 80 Gb/s x1" lines under each bus/port block. */
export function parseThunderboltPorts(output: string): ThunderboltPort[] {
  const ports: ThunderboltPort[] = []
  let current: ThunderboltPort | null = null
  for (const line of output.split('\n')) {
    const head = /^\s{4,8}(Thunderbolt\/USB4 Bus \d+|Thunderbolt Bus \d*|Port(?: \(\w+\))?):\s*$/.exec(line)
    if (head) {
      current = { name: head[1]!, speedGbps: null }
      ports.push(current)
      continue
    }
    const speed = /Speed:\s*Up to (\d+) Gb\/s/.exec(line)
    if (speed && current) current.speedGbps = Math.max(current.speedGbps ?? 0, Number(speed[1]))
  }
  return ports
}

/** Thunderbolt 5 links run at 80 Gb/s (120 with bandwidth boost); TB4 tops out at 40 and cannot do RDMA. */
export const isThunderbolt5 = (speedGbps: number | null): boolean => speedGbps !== null && speedGbps >= 80

/** `sw_vers` prints "ProductVersion:\t26.2"; returns "26.2". */
export function parseSwVers(output: string): string | null {
  return /ProductVersion:\s*(\S+)/.exec(output)?.[1] ?? null
}

/** Member interfaces of a bridge from `ifconfig bridge0` (lines like `member: en2 flags=3<LEARNING,DISCOVER>`). */
export function parseBridgeMembers(output: string): string[] {
  return [...output.matchAll(/^\s*member:\s+(\S+)/gm)].map((m) => m[1]!)
}
