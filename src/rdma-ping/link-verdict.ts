/** rdma-ping's verdict: is the link between the ranks as fast as a healthy one of its transport, judged on the average
 * all_sum bandwidth at 64 MiB (the size the seed's threshold is quoted at), and what to check when it is not. Pure. */
import type { PingTransport } from '../tensor-parallel/choose-transport.ts'
import type { SizeResult } from './round-stats.ts'

/** The size the verdict is judged at: the seed's largest `make rdma-test` size (16777216 float32 = 64 MiB). */
export const JUDGED_BYTES = 64 * 1024 * 1024

export interface Threshold {
  /** Healthy when the average bandwidth at 64 MiB is above this (GB/s). */
  gbps: number
  /** What a healthy link of this kind is, for the verdict line. */
  healthy: string
  /** What to check, in order, when it is below. */
  checks: readonly string[]
}

const TCP_CHECKS = [
  "that --peer / --coordinator is the other Mac's Thunderbolt Bridge address (169.254.x.x on bridge0), not a Wi-Fi, Ethernet or VPN address: otherwise the traffic takes that slower path",
  'the cable and port: re-seat the Thunderbolt cable or try another port',
  'a Thunderbolt Bridge loop: 3 or more Macs cabled in a ring with bridge0 joining two Thunderbolt ports (`dbcluster doctor --nodes N` checks it)',
  '`dbcluster doctor` on every Mac',
  '`rdma_ctl status`: where both Macs have Thunderbolt 5 and RDMA is enabled, --transport jaccl is the fast path',
]

export const THRESHOLDS: Record<PingTransport, Threshold> = {
  // Seed (mlx-jaccl-cluster README, "Test RDMA"): "A healthy TB link shows > 5 GB/s"; it measured 7.94 GB/s average,
  // 8.05 GB/s peak at 64 MB on 2× M4 Pro Mac mini over rdma_en4.
  jaccl: {
    gbps: 5,
    healthy: 'a healthy Thunderbolt 5 RDMA link shows above 5 GB/s',
    checks: [
      '`rdma_ctl status` on every Mac says enabled (else boot into Recovery and run `rdma_ctl enable`)',
      '`ibv_devinfo`: the --rdma-device given is PORT_ACTIVE (a PORT_DOWN device is the wrong rdma_enX for this cable)',
      'the cable and port: re-seat the Thunderbolt 5 cable or try another port (on a Mac Studio not the one next to Ethernet)',
      '`dbcluster doctor` on every Mac (RDMA, Thunderbolt, OS match and bridge-loop checks)',
    ],
  },
  // No source measures TCP over a Thunderbolt Bridge, so this is a floor, not an expectation: the seed's
  // scripts/rdma_test.py calls above 500e6 B/s "OK — working, bandwidth moderate" and below it "LOW — check rdma_ctl
  // enable and cable"; and our sealed link moves 0.53 GB/s at 64 MB between two processes on one 2-vCPU VM
  // (docs/benchmarks.md, bench link; platform-notes.md: Bun TCP loopback 180 µs per 256 KB round trip). A cable slower
  // than loopback on a small VM is not healthy.
  ring: {
    gbps: 0.5,
    healthy:
      'a healthy TCP link over a Thunderbolt Bridge should move above 0.5 GB/s (a floor: no measured TB-bridge figure exists)',
    checks: TCP_CHECKS,
  },
  link: {
    gbps: 0.5,
    healthy:
      'a healthy sealed link over a Thunderbolt Bridge should move above 0.5 GB/s (a floor: no measured TB-bridge figure exists)',
    checks: TCP_CHECKS,
  },
}

export type VerdictStatus = 'healthy' | 'low' | 'cannot-judge'

export interface Verdict {
  transport: PingTransport
  status: VerdictStatus
  /** The size judged at (64 MiB). */
  judged_bytes: number
  /** Average bandwidth measured at 64 MiB, or null when that size was not run. */
  avg_gbps: number | null
  threshold_gbps: number
  /** One line saying it all. */
  line: string
  /** What to check (when low), or what to add (when it cannot judge); empty when healthy. */
  checks: string[]
}

export function judgeLink(transport: PingTransport, worldSize: number, sizes: readonly SizeResult[]): Verdict {
  const t = THRESHOLDS[transport]
  const at = sizes.find((s) => s.bytes === JUDGED_BYTES)
  const base = { transport, judged_bytes: JUDGED_BYTES, threshold_gbps: t.gbps }
  if (!at)
    return {
      ...base,
      status: 'cannot-judge',
      avg_gbps: null,
      line: `verdict (${transport}): cannot judge — 64 MiB was not measured, and the threshold (${t.gbps} GB/s) is quoted at 64 MiB; add 64M to --sizes`,
      checks: ['run again with 64M among the sizes: --sizes 4K,256K,4M,64M (the default), or --preset verbose'],
    }
  const avg = at.bandwidth_gbps.avg
  const figure = `${avg.toFixed(2)} GB/s average at 64 MiB`
  const ranks = worldSize > 2 ? ` (the threshold is a 2-rank figure; this run had ${worldSize})` : ''
  if (avg > t.gbps)
    return {
      ...base,
      status: 'healthy',
      avg_gbps: avg,
      line: `verdict (${transport}): healthy — ${figure}; ${t.healthy}${ranks}`,
      checks: [],
    }
  return {
    ...base,
    status: 'low',
    avg_gbps: avg,
    line: `verdict (${transport}): LOW — ${figure}; ${t.healthy}${ranks}. Check:`,
    checks: [...t.checks],
  }
}
