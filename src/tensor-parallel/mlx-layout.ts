/** The files and environment MLX distributed reads to find its peers (design/mlx-c.md §5), built from what every rank
 * reported at the rendezvous. Pure apart from writeMlxEnvironment, so each rule is tested without MLX. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DbcError, UsageError } from '../errors.ts'

export type MlxTransportName = 'ring' | 'jaccl'

/** What one rank tells rank 0: the IPv4 address and free port it offers MLX, and (jaccl) its RDMA device per peer rank. */
export interface RankReport {
  rank: number
  ip: string
  port: number
  /** jaccl: devices[j] faces rank j (null for itself). */
  devices?: (string | null)[]
}

/** Everything each rank needs to start MLX: ring's hostfile, or jaccl's coordinator and device matrix. */
export interface MlxLayout {
  transport: MlxTransportName
  worldSize: number
  /** ring: by rank, the "ip:port" that rank listens on. */
  hostfile?: string[][]
  /** jaccl: "ip:port" rank 0 listens on, and [i][j] = the device rank i uses towards rank j. */
  coordinator?: string
  devices?: (string | null)[][]
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

export function buildLayout(transport: MlxTransportName, reports: readonly RankReport[]): MlxLayout {
  const worldSize = reports.length
  const byRank = [...reports].sort((a, b) => a.rank - b.rank)
  byRank.forEach((r, i) => {
    if (r.rank !== i)
      throw new DbcError(
        'E_RDMA_PING_RANKS',
        `ranks ${byRank.map((x) => x.rank).join(', ')} joined; expected 0..${worldSize - 1} once each`,
        'give every process a different --rank below --world-size',
      )
    // MLX's ring opens AF_INET sockets only
    if (!IPV4.test(r.ip))
      throw new DbcError(
        'E_RDMA_PING_ADDRESS',
        `rank ${r.rank} offers '${r.ip}', but MLX distributed needs an IPv4 address`,
        'reach rank 0 through an IPv4 address (--peer 10.0.0.1:47100)',
      )
  })
  if (transport === 'ring') return { transport, worldSize, hostfile: byRank.map((r) => [`${r.ip}:${r.port}`]) }
  const devices = byRank.map((r) => {
    const row = r.devices ?? []
    return byRank.map((_, j) => {
      if (j === r.rank) return null
      const d = row[j]
      if (!d)
        throw new DbcError(
          'E_RDMA_PING_DEVICE',
          `rank ${r.rank} named no RDMA device towards rank ${j}`,
          'give --rdma-device NAME (2 ranks) or one name per rank, e.g. --rdma-device -,rdma_en5,rdma_en6',
        )
      return d
    })
  })
  return { transport, worldSize, coordinator: `${byRank[0]!.ip}:${byRank[0]!.port}`, devices }
}

/** --rdma-device: one name (used towards every peer) or a comma list indexed by rank ('-' for this rank). */
export function parseDevices(text: string | undefined, rank: number, worldSize: number): (string | null)[] | undefined {
  if (text === undefined) return undefined
  const parts = text.split(',').map((s) => s.trim())
  if (parts.length === 1) return Array.from({ length: worldSize }, (_, j) => (j === rank ? null : parts[0]!))
  if (parts.length !== worldSize)
    throw new UsageError(
      `--rdma-device lists ${parts.length} names for ${worldSize} ranks`,
      'give one name, or one per rank with - for this rank',
    )
  return parts.map((p, j) => (j === rank || p === '-' ? null : p))
}

/** Writes the layout's files to a private temporary folder and returns the environment MLX reads, plus a cleanup. */
export function writeMlxEnvironment(
  layout: MlxLayout,
  rank: number,
): { env: Record<string, string>; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'dbcluster-mlx-'))
  const cleanup = () => rmSync(dir, { recursive: true, force: true })
  // lower-latency CPU↔GPU synchronisation around the CPU-stream collectives (design/mlx-c.md §5)
  const env: Record<string, string> = { MLX_RANK: String(rank), MLX_METAL_FAST_SYNCH: '1' }
  if (layout.transport === 'ring') {
    env.MLX_HOSTFILE = join(dir, 'hostfile.json')
    writeFileSync(env.MLX_HOSTFILE, JSON.stringify(layout.hostfile))
  } else {
    env.MLX_IBV_DEVICES = join(dir, 'devices.json')
    writeFileSync(env.MLX_IBV_DEVICES, JSON.stringify(layout.devices))
    env.MLX_JACCL_COORDINATOR = layout.coordinator!
  }
  return { env, cleanup }
}
