/** The rdma-ping measurement, independent of transport: R rounds of all_sum per size, each result checked exactly. */
import { DbcError, UsageError } from '../errors.ts'
import type { AllSum } from './link-all-sum.ts'
import { expectedSum, firstMismatch, rankData } from './exact-data.ts'
import { formatBytes } from './ping-report.ts'
import { summarizeRounds, type SizeResult } from './round-stats.ts'

export type { SizeResult } from './round-stats.ts'

/** One finished round, for progress lines (warm-up rounds are not reported). */
export interface RoundDone {
  bytes: number
  /** 1-based index of the measured round. */
  round: number
  rounds: number
  us: number
}

export async function pingRounds(
  allSum: AllSum,
  o: {
    rank: number
    worldSize: number
    sizes: number[]
    rounds: number
    warmup?: number
    onProgress?: (line: string) => void
    onRound?: (done: RoundDone) => void
  },
): Promise<SizeResult[]> {
  const results: SizeResult[] = []
  const warmup = o.warmup ?? 1
  let round = 0n
  for (const requested of o.sizes) {
    const elements = Math.max(1, Math.floor(requested / 4))
    const bytes = elements * 4
    const data = rankData(o.rank, elements)
    const want = expectedSum(o.worldSize, elements)
    const times: number[] = []
    for (let r = 0; r < o.rounds + warmup; r++) {
      const t0 = Bun.nanoseconds()
      const got = await allSum(data, round++)
      const us = (Bun.nanoseconds() - t0) / 1e3
      const bad = firstMismatch(got, want)
      if (bad >= 0)
        throw new DbcError(
          'E_RDMA_PING_WRONG_SUM',
          `all_sum of ${bytes} bytes, round ${r}: element ${bad} is ${got[bad]}, expected ${want[bad]}`,
          'the transport corrupted data: check the cable and run doctor',
        )
      if (r >= warmup) {
        times.push(us)
        o.onRound?.({ bytes, round: times.length, rounds: o.rounds, us })
      }
    }
    const result = summarizeRounds(bytes, times)
    results.push(result)
    o.onProgress?.(
      `${formatBytes(bytes)}: ${o.rounds} rounds, avg ${result.latency_us.avg.toFixed(1)} µs, ${result.bandwidth_gbps.avg.toFixed(3)} GB/s avg`,
    )
  }
  return results
}

/** "4K,256K,4M,64M" → bytes (K, M, G are binary: 64M = 64 MiB). */
export function parseSizes(text: string): number[] {
  return text.split(',').map((part) => {
    const m = /^\s*(\d+)\s*([KMG]?)B?\s*$/i.exec(part)
    if (!m) throw new UsageError(`--sizes: bad size '${part}'`, 'use sizes like 4K,256K,4M,64M')
    const n = Number(m[1]) * 1024 ** ' KMG'.indexOf((m[2] || ' ').toUpperCase())
    if (n < 4)
      throw new UsageError(`--sizes: size '${part}' is below 4 bytes (one float32)`, 'use sizes like 4K,256K,4M,64M')
    return n
  })
}
