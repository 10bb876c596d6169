/** The checks that need the other nodes (`dbcluster doctor --cluster URL`): what the head learned from every node when it
 * joined — OS, clock and free memory — compared across the cluster and against the plan; and, on a Mac in a cluster of
 * three or more, whether the Thunderbolt Bridge joins two Thunderbolt ports (a loop when the Macs are cabled in a ring). */
import { fail, pass, skip, type CheckResult } from './check.ts'
import type { DoctorEnv } from './doctor-env.ts'
import { parseArpA } from '../discovery/arp.ts'
import { parseBridgeMembers, parseIbvDevinfo } from './macos-parsers.ts'

/** What the head's /health says of each member (docs/cluster.md §Status). */
interface Member {
  rank: number
  serial: string | null
  os_version: string | null
  clock_skew_ms: number | null
  free_bytes: number | null
  /** What the node had free when it joined, before its layers loaded (the plan was made against this). */
  free_bytes_at_join?: number | null
  weight_bytes: number | null
  kv_bytes: number | null
  usable_bytes: number | null
}

const CLOCK_LIMIT_MS = 5000
const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`

export async function checkCluster(env: DoctorEnv): Promise<CheckResult[]> {
  const names = ['OS versions across nodes', 'clocks across nodes', 'memory against the plan'] as const
  if (!env.cluster) return names.map((n) => skip(n, 'no --cluster URL of a running head given'))
  let members: Member[]
  try {
    const res = await env.fetch(new URL('/health', env.cluster), { signal: AbortSignal.timeout(3000) })
    members = ((await res.json()) as { members?: Member[] }).members ?? []
  } catch (e) {
    return names.map((n) =>
      fail(
        n,
        `cannot read ${env.cluster}/health: ${e instanceof Error ? e.message : String(e)}`,
        'start the head (dbcluster serve … --rank 0) or fix --cluster',
      ),
    )
  }
  if (members.length < 2) return names.map((n) => skip(n, `${env.cluster} serves alone (no cluster members)`))
  const label = (m: Member) => `rank ${m.rank} ${m.serial ?? '?'}`
  const results: CheckResult[] = []

  const versions = new Map<string, string[]>()
  for (const m of members)
    versions.set(m.os_version ?? 'unknown', [...(versions.get(m.os_version ?? 'unknown') ?? []), label(m)])
  results.push(
    versions.size === 1
      ? pass(names[0], `all ${members.length} nodes run ${[...versions.keys()][0]}`)
      : fail(
          names[0],
          [...versions].map(([v, who]) => `${v}: ${who.join(', ')}`).join('; '),
          'update every Mac to the same macOS release (RDMA and MLX need matching versions)',
        ),
  )

  const off = members.filter((m) => m.clock_skew_ms === null || Math.abs(m.clock_skew_ms) > CLOCK_LIMIT_MS)
  const worst = Math.max(...members.map((m) => Math.abs(m.clock_skew_ms ?? 0)))
  results.push(
    off.length === 0
      ? pass(names[1], `every node within ${(worst / 1000).toFixed(1)} s of the head`)
      : fail(
          names[1],
          off
            .map(
              (m) => `${label(m)} ${m.clock_skew_ms === null ? 'unknown' : `${(m.clock_skew_ms / 1000).toFixed(1)} s`}`,
            )
            .join(', '),
          'enable network time on every node (timedatectl set-ntp true, or System Settings > Date & Time)',
        ),
  )

  // judged against the memory the plan saw (free at join): free memory now already has the layers loaded
  const planned = (m: (typeof members)[number]) => m.free_bytes_at_join ?? m.free_bytes
  const short = members.filter((m) => {
    const free = planned(m)
    return free !== null && m.weight_bytes !== null && m.kv_bytes !== null && free < m.weight_bytes + m.kv_bytes
  })
  results.push(
    short.length === 0
      ? pass(names[2], members.map((m) => `${label(m)} ${planned(m) == null ? '?' : gib(planned(m)!)} free`).join(', '))
      : fail(
          names[2],
          short
            .map(
              (m) =>
                `${label(m)} had ${gib(planned(m)!)} free for ${gib(m.weight_bytes! + m.kv_bytes!)} of weights and KV`,
            )
            .join('; '),
          'close other programs on that node, give it a smaller --memory, or add a node',
        ),
  )
  return results
}

export async function checkBridgeLoop(env: DoctorEnv, nodes: number | undefined): Promise<CheckResult> {
  const name = 'Thunderbolt Bridge loop'
  if (env.platform !== 'darwin') return skip(name, `macOS only (this is ${env.platform})`)
  if (nodes === undefined || nodes < 3)
    return skip(name, `only a ring of 3+ Macs can loop${nodes === undefined ? ' (give --nodes or --cluster)' : ''}`)
  const r = await env.run(['ifconfig', 'bridge0'])
  if (!r.ok) return skip(name, 'no bridge0 (no Thunderbolt Bridge): each cable has its own interface')
  const members = parseBridgeMembers(r.stdout)
  if (members.length < 2) return pass(name, `bridge0 has ${members.length} member port(s)`)
  return fail(
    name,
    `bridge0 joins ${members.join(', ')} in a cluster of ${nodes}: cabled in a ring, broadcast frames loop`,
    'remove all but one Thunderbolt port from the bridge (System Settings > Network > Thunderbolt Bridge), or take Thunderbolt Bridge off and give each cable its own link-local interface',
  )
}

/** Which RDMA device faces which peer: a Thunderbolt RDMA device `rdma_enN` rides interface `enN`, and the peer on the
 * other end of that cable is the link-local neighbour seen on `enN`. This node's row of jaccl's device matrix; each node
 * prints its own, so running doctor on both ends gives both directions. */
export async function checkRdmaPeers(env: DoctorEnv): Promise<CheckResult> {
  const name = 'RDMA device → peer'
  if (env.platform !== 'darwin') return skip(name, `macOS only (this is ${env.platform})`)
  const info = await env.run(['ibv_devinfo'])
  if (!info.ok) return skip(name, `ibv_devinfo: ${info.reason ?? 'failed'}`)
  const active = parseIbvDevinfo(info.stdout).filter((p) => p.state.startsWith('PORT_ACTIVE'))
  if (active.length === 0) return skip(name, 'no RDMA port is active (no Thunderbolt 5 cable up)')
  const rows: string[] = []
  const lonely: string[] = []
  for (const { device } of active) {
    const iface = /^rdma_(\S+)$/.exec(device)?.[1]
    if (!iface) {
      rows.push(`${device}: interface unknown`)
      continue
    }
    const arp = await env.run(['arp', '-a', '-n', '-i', iface])
    const peers = arp.ok ? parseArpA(arp.stdout).filter((n) => n.address.startsWith('169.254.')) : []
    if (peers.length === 0) lonely.push(`${device} (${iface})`)
    rows.push(`${device} → ${iface} → ${peers.length ? peers.map((p) => p.address).join(', ') : 'no peer seen'}`)
  }
  if (lonely.length)
    return fail(
      name,
      rows.join('; '),
      `no peer answers on ${lonely.join(', ')}: check that cable and that the Mac on the other end has a 169.254 address on it (start dbcluster there)`,
    )
  return pass(name, `${rows.join('; ')} (give jaccl these device names: rdma-ping/serve --rdma-device)`)
}
