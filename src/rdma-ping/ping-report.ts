/** What one rank of rdma-ping reports: the JSON document `--json` prints, and the same figures as a table. */
import type { PingTransport } from '../tensor-parallel/choose-transport.ts'
import type { Verdict } from './link-verdict.ts'
import type { PresetName } from './presets.ts'
import type { SizeResult } from './round-stats.ts'

export interface PingReport {
  rank: number
  world_size: number
  transport: PingTransport
  preset: PresetName | null
  /** Measured rounds per size, and the unmeasured warm-up rounds before them. */
  rounds: number
  warmup_rounds: number
  sizes: SizeResult[]
  verdict: Verdict
}

/** 4096 → "4 KiB", 67108864 → "64 MiB"; other sizes in bytes. */
export function formatBytes(bytes: number): string {
  for (const [unit, n] of [
    ['GiB', 2 ** 30],
    ['MiB', 2 ** 20],
    ['KiB', 2 ** 10],
  ] as const)
    if (bytes >= n && bytes % n === 0) return `${bytes / n} ${unit}`
  return `${bytes} B`
}

/** µs below 10 ms, ms above. */
export function formatLatency(us: number): string {
  return us < 10_000 ? `${us.toFixed(1)} µs` : `${(us / 1e3).toFixed(2)} ms`
}

export function reportLines(r: PingReport): string[] {
  const head = ['size', 'avg', 'min', 'median', 'p99', 'max', 'GB/s avg', 'GB/s peak']
  const rows = r.sizes.map((s) => [
    formatBytes(s.bytes),
    formatLatency(s.latency_us.avg),
    formatLatency(s.latency_us.min),
    formatLatency(s.latency_us.median),
    formatLatency(s.latency_us.p99),
    formatLatency(s.latency_us.max),
    s.bandwidth_gbps.avg.toFixed(3),
    s.bandwidth_gbps.peak.toFixed(3),
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)))
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ')
  return [
    `rank ${r.rank}/${r.world_size} over ${r.transport}${r.preset ? ` (preset ${r.preset})` : ''}: ${r.rounds} rounds per size after ${r.warmup_rounds} warm-up, every sum exact`,
    `latency per round; bandwidth = vector bytes / round time (avg: mean round, peak: fastest round)`,
    line(head),
    ...rows.map(line),
    r.verdict.line,
    ...r.verdict.checks.map((c) => `  - ${c}`),
  ]
}
