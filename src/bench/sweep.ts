/** `bench sweep`: `bench serve` for every node count × prompt length on this machine. Each node count gets one target
 * (one process, or a local cluster), started and stopped here; results grow level by level so that a stopped sweep
 * still has everything measured so far. With repeats > 1 every target is up at once and each prompt length is measured
 * `repeats` times, the node counts taking turns, so that a noisy machine's drift falls on all of them alike: a level
 * reports the medians of its runs, and node counts compare run by run (sweepMarkdown's paired ratios). */
import { runServeSweep, type LevelResult, type SweepProgress } from './serve-sweep.ts'
import { median } from './stats.ts'
import { startServeTarget, type ServeTarget } from './serve-target.ts'

export interface SweepOptions {
  model: string
  nodes: number[]
  concurrency: number[]
  promptTokens: number[]
  maxTokens: number
  requestsPerLevel?: number
  /** Measurements of each point, node counts alternating (default 1: each node count once, one after the other). */
  repeats?: number
  /** CPU threads per process. */
  threads: number
  pinCores: boolean
  backend?: string
  /** How clusters (N ≥ 2) split the model (default pipeline). */
  parallel?: 'pipeline' | 'tensor'
  signal?: AbortSignal
  /** A target is starting (label says which). */
  onTarget?: (label: string) => void
  onProgress?: (series: SweepSeries, p: SweepProgress) => void
  /** Called whenever results changed: `level` of `series` was measured. */
  onUpdate?: (results: SweepResults, series: SweepSeries, level: LevelResult) => void
}

/** One line of the chart: a node count and a prompt length, measured at each concurrency level. */
export interface SweepSeries {
  nodes: number
  prompt_tokens: number
  /** What served it, e.g. "2 nodes, 1 thread, pinned to one core each". */
  target: string
  /** With repeats: each level the median of its runs (tok/s, latencies) and the sum of their requests. */
  levels: LevelResult[]
  /** With repeats: every run's levels, in the order measured. */
  runs?: LevelResult[][]
}

export interface SweepResults {
  kind: 'dbcluster-bench-sweep'
  version: 1
  model: string
  settings: {
    nodes: number[]
    concurrency: number[]
    prompt_tokens: number[]
    max_tokens: number
    requests_per_level: number | null
    repeats: number
    threads_per_process: number
    pinned_cores: boolean
    parallel: 'pipeline' | 'tensor'
  }
  started_at: string
  finished_at: string | null
  /** True until every planned point was measured. */
  partial: boolean
  /** Why the sweep ended early, when it did. */
  stopped_reason?: string
  series: SweepSeries[]
}

export const seriesLabel = (s: { nodes: number; prompt_tokens: number }): string =>
  `${s.nodes} node${s.nodes > 1 ? 's' : ''}, ${s.prompt_tokens}-token prompts`

/** Options for the server a serving benchmark starts: enough KV slots for the highest concurrency and enough context
 * for the longest prompt plus its completion (not the 4096 default, which would multiply KV memory for nothing). */
export function benchTargetArgs(
  maxConcurrency: number,
  maxPromptTokens: number,
  maxTokens: number,
): { maxBatch: number; extraArgs: string[] } {
  return { maxBatch: maxConcurrency, extraArgs: ['--max-context', String(maxPromptTokens + maxTokens + 16)] }
}

export function emptySweepResults(o: SweepOptions): SweepResults {
  return {
    kind: 'dbcluster-bench-sweep',
    version: 1,
    model: o.model,
    settings: {
      nodes: o.nodes,
      concurrency: o.concurrency,
      prompt_tokens: o.promptTokens,
      max_tokens: o.maxTokens,
      requests_per_level: o.requestsPerLevel ?? null,
      repeats: o.repeats ?? 1,
      threads_per_process: o.threads,
      pinned_cores: o.pinCores,
      parallel: o.parallel ?? 'pipeline',
    },
    started_at: new Date().toISOString(),
    finished_at: null,
    partial: true,
    series: [],
  }
}

const medianOf = (values: (number | null)[]): number | null => {
  const known = values.filter((v): v is number => v !== null)
  return known.length ? Math.round(median(known) * 100) / 100 : null
}

/** One level from several runs of it: medians of the rates and latencies, sums of the counts. */
export function medianLevel(runs: LevelResult[]): LevelResult {
  const sum = (pick: (l: LevelResult) => number) => runs.reduce((a, l) => a + pick(l), 0)
  const firstError = runs.find((l) => l.first_error)?.first_error
  return {
    concurrency: runs[0]!.concurrency,
    requests: sum((l) => l.requests),
    ok: sum((l) => l.ok),
    failed: sum((l) => l.failed),
    generated_tokens: sum((l) => l.generated_tokens),
    seconds: Math.round(sum((l) => l.seconds) * 1000) / 1000,
    tok_s: medianOf(runs.map((l) => l.tok_s))!,
    ttft_p50_ms: medianOf(runs.map((l) => l.ttft_p50_ms)),
    ttft_p95_ms: medianOf(runs.map((l) => l.ttft_p95_ms)),
    itl_p50_ms: medianOf(runs.map((l) => l.itl_p50_ms)),
    itl_p95_ms: medianOf(runs.map((l) => l.itl_p95_ms)),
    ...(firstError ? { first_error: firstError } : {}),
  }
}

/** Runs the sweep, filling `results` (create it with emptySweepResults) as it goes; it stays partial when stopped. */
export async function runSweep(o: SweepOptions, results: SweepResults = emptySweepResults(o)): Promise<SweepResults> {
  if ((o.repeats ?? 1) > 1) return runAlternating(o, results)
  const target = benchTargetArgs(Math.max(...o.concurrency), Math.max(...o.promptTokens), o.maxTokens)
  for (const nodes of o.nodes) {
    if (o.signal?.aborted) break
    o.onTarget?.(`${nodes === 1 ? 'one process' : `a ${nodes}-node cluster`} on ${o.model}`)
    const server: ServeTarget = await startServeTarget({
      model: o.model,
      nodes,
      threads: o.threads,
      pinCores: o.pinCores,
      backend: o.backend,
      parallel: o.parallel,
      ...target,
    })
    try {
      for (const promptTokens of o.promptTokens) {
        if (o.signal?.aborted) break
        const series: SweepSeries = { nodes, prompt_tokens: promptTokens, target: server.label, levels: [] }
        await measureSeries(o, server.url, series, (level) => {
          if (series.levels.length === 0) results.series.push(series)
          series.levels.push(level)
          o.onUpdate?.(results, series, level)
        })
      }
    } finally {
      await server.stop()
    }
  }
  return finish(o, results)
}

/** Every concurrency level of one target at the series' prompt length, progress reported against the series. */
function measureSeries(o: SweepOptions, url: string, series: SweepSeries, onLevel: (level: LevelResult) => void) {
  return runServeSweep({
    url,
    concurrency: o.concurrency,
    promptTokens: series.prompt_tokens,
    maxTokens: o.maxTokens,
    requestsPerLevel: o.requestsPerLevel,
    signal: o.signal,
    onProgress: (p) => o.onProgress?.(series, p),
    onLevel,
  })
}

function finish(o: SweepOptions, results: SweepResults): SweepResults {
  const repeats = o.repeats ?? 1
  const complete =
    results.series.length === o.nodes.length * o.promptTokens.length &&
    results.series.every(
      (s) =>
        s.levels.length === o.concurrency.length &&
        (repeats === 1 || (s.runs?.length === repeats && s.runs.every((r) => r.length === o.concurrency.length))),
    )
  results.partial = !complete
  results.finished_at = new Date().toISOString()
  return results
}

/** repeats > 1: every target up at once (an idle server costs nothing but memory), each prompt length measured
 * `repeats` times over the node counts in turn. */
async function runAlternating(o: SweepOptions, results: SweepResults): Promise<SweepResults> {
  const target = benchTargetArgs(Math.max(...o.concurrency), Math.max(...o.promptTokens), o.maxTokens)
  const servers: ServeTarget[] = []
  try {
    for (const nodes of o.nodes) {
      if (o.signal?.aborted) break
      o.onTarget?.(`${nodes === 1 ? 'one process' : `a ${nodes}-node cluster`} on ${o.model}`)
      servers.push(
        await startServeTarget({
          model: o.model,
          nodes,
          threads: o.threads,
          pinCores: o.pinCores,
          backend: o.backend,
          parallel: o.parallel,
          ...target,
        }),
      )
    }
    for (const promptTokens of o.promptTokens) {
      const series = o.nodes.map((nodes, i): SweepSeries => ({
        nodes,
        prompt_tokens: promptTokens,
        target: servers[i]?.label ?? '',
        levels: [],
        runs: [],
      }))
      for (let run = 0; run < o.repeats! && servers.length === o.nodes.length; run++) {
        for (const [i, s] of series.entries()) {
          if (o.signal?.aborted) break
          const levels: LevelResult[] = []
          s.runs!.push(levels)
          await measureSeries(o, servers[i]!.url, s, (level) => {
            if (!results.series.includes(s)) results.series.push(s)
            levels.push(level)
            s.levels = o.concurrency.flatMap((c) => {
              const measured = s.runs!.flatMap((r) => r.filter((l) => l.concurrency === c))
              return measured.length ? [medianLevel(measured)] : []
            })
            o.onUpdate?.(results, s, level)
          })
        }
      }
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()))
  }
  return finish(o, results)
}
