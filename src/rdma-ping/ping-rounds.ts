/** The rdma-ping measurement, independent of transport: R rounds of all_sum per size, each result checked exactly. */
import { DbcError } from '../errors.ts'
import type { AllSum } from './link-all-sum.ts'
import { expectedSum, firstMismatch, rankData } from './exact-data.ts'

export interface SizeResult {
  bytes: number
  rounds: number
  latency_us: { min: number; median: number; p99: number }
  /** Algorithm bandwidth: bytes of the vector / median round time. */
  gbps: number
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
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
  },
): Promise<SizeResult[]> {
  const results: SizeResult[] = []
  let round = 0n
  for (const bytes of o.sizes) {
    const elements = Math.max(1, Math.floor(bytes / 4))
    const data = rankData(o.rank, elements)
    const want = expectedSum(o.worldSize, elements)
    const times: number[] = []
    for (let r = 0; r < o.rounds + (o.warmup ?? 1); r++) {
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
      if (r >= (o.warmup ?? 1)) times.push(us)
    }
    times.sort((a, b) => a - b)
    const med = percentile(times, 50)
    results.push({
      bytes: elements * 4,
      rounds: o.rounds,
      latency_us: { min: times[0]!, median: med, p99: percentile(times, 99) },
      gbps: (elements * 4) / (med * 1e3),
    })
    o.onProgress?.(`${elements * 4} bytes: median ${med.toFixed(1)} µs`)
  }
  return results
}

/** "4K,256K,4M,64M" → bytes. */
export function parseSizes(text: string): number[] {
  return text.split(',').map((part) => {
    const m = /^\s*(\d+)\s*([KMG]?)B?\s*$/i.exec(part)
    if (!m) throw new DbcError('E_USAGE', `bad size '${part}'`, 'use sizes like 4K,256K,4M,64M')
    const n = Number(m[1]) * 1024 ** ' KMG'.indexOf((m[2] || ' ').toUpperCase())
    if (n < 4)
      throw new DbcError('E_USAGE', `size '${part}' is below 4 bytes (one float32)`, 'use sizes like 4K,256K,4M,64M')
    return n
  })
}
