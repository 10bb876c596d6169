/** Small statistics helpers for benchmarks: medians and percentiles of samples. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const at = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[at]!
}

export const median = (samples: readonly number[]): number => {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** Runs fn repeatedly (after warmup) until both minRuns and minSeconds are reached; returns per-run seconds. */
export function timeRuns(
  fn: (run: number) => void,
  options: { warmup?: number; minRuns?: number; minSeconds?: number; maxRuns?: number } = {},
): number[] {
  const { warmup = 2, minRuns = 10, minSeconds = 0.4, maxRuns = 10_000 } = options
  for (let i = 0; i < warmup; i++) fn(i)
  const samples: number[] = []
  const start = Bun.nanoseconds()
  for (let i = 0; samples.length < maxRuns; i++) {
    const t0 = Bun.nanoseconds()
    fn(warmup + i)
    samples.push((Bun.nanoseconds() - t0) / 1e9)
    if (samples.length >= minRuns && (Bun.nanoseconds() - start) / 1e9 >= minSeconds) break
  }
  return samples
}
