/** One size's figures from its measured round times: latency min/avg/median/p99/max and bandwidth.
 *
 * Bandwidth is algorithm bandwidth, the convention of the seed's rdma_test.py (`payload / dt`): the bytes of the vector
 * each rank contributes, divided by the round time (GB = 10^9 bytes). Average uses the mean round time, peak the
 * fastest round, median the median round. Unlike rdma_test.py no rounds are dropped: max and p99 show the outliers. */

export interface SizeResult {
  /** Bytes of the float32 vector each rank sums (a whole number of elements). */
  bytes: number
  /** Measured rounds (after the warm-up). */
  rounds: number
  latency_us: { min: number; avg: number; median: number; p99: number; max: number }
  bandwidth_gbps: { avg: number; peak: number; median: number }
  /** Every measured round's time, in the order run. */
  round_us: number[]
}

/** Nearest-rank percentile of an ascending list. */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

/** bytes per µs → GB/s (10^9 bytes per second). */
export const gbps = (bytes: number, us: number): number => bytes / (us * 1e3)

export function summarizeRounds(bytes: number, roundUs: readonly number[]): SizeResult {
  if (roundUs.length === 0) throw new Error('summarizeRounds needs at least one round')
  const sorted = [...roundUs].sort((a, b) => a - b)
  const avg = roundUs.reduce((s, t) => s + t, 0) / roundUs.length
  const median = percentile(sorted, 50)
  return {
    bytes,
    rounds: roundUs.length,
    latency_us: { min: sorted[0]!, avg, median, p99: percentile(sorted, 99), max: sorted.at(-1)! },
    bandwidth_gbps: { avg: gbps(bytes, avg), peak: gbps(bytes, sorted[0]!), median: gbps(bytes, median) },
    round_us: [...roundUs],
  }
}
