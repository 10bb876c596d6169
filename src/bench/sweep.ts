/** `bench sweep`: `bench serve` for every node count × prompt length on this machine. Each node count gets one target
 * (one process, or a local cluster), started and stopped here; results grow level by level so that a stopped sweep
 * still has everything measured so far. */
import { runServeSweep, type LevelResult, type SweepProgress } from './serve-sweep.ts'
import { startServeTarget, type ServeTarget } from './serve-target.ts'

export interface SweepOptions {
  model: string
  nodes: number[]
  concurrency: number[]
  promptTokens: number[]
  maxTokens: number
  requestsPerLevel?: number
  /** CPU threads per process. */
  threads: number
  pinCores: boolean
  backend?: string
  signal?: AbortSignal
  /** A target is starting (label says which). */
  onTarget?: (label: string) => void
  onProgress?: (series: SweepSeries, p: SweepProgress) => void
  /** Called whenever results changed (a level was measured). */
  onUpdate?: (results: SweepResults) => void
}

/** One line of the chart: a node count and a prompt length, measured at each concurrency level. */
export interface SweepSeries {
  nodes: number
  prompt_tokens: number
  /** What served it, e.g. "2 nodes, 1 thread, pinned to one core each". */
  target: string
  levels: LevelResult[]
}

export interface SweepResults {
  kind: 'dbcluster-bench-sweep'
  version: 1
  model: string
  settings: { nodes: number[]; concurrency: number[]; prompt_tokens: number[]; max_tokens: number; requests_per_level: number | null; threads_per_process: number; pinned_cores: boolean }
  started_at: string
  finished_at: string | null
  /** True until every planned point was measured. */
  partial: boolean
  /** Why the sweep ended early, when it did. */
  stopped_reason?: string
  series: SweepSeries[]
}

export const seriesLabel = (s: { nodes: number; prompt_tokens: number }): string => `${s.nodes} node${s.nodes > 1 ? 's' : ''}, ${s.prompt_tokens}-token prompts`

/** Options for the server a serving benchmark starts: enough KV slots for the highest concurrency and enough context
 * for the longest prompt plus its completion (not the 4096 default, which would multiply KV memory for nothing). */
export function benchTargetArgs(maxConcurrency: number, maxPromptTokens: number, maxTokens: number): { maxBatch: number; extraArgs: string[] } {
  return { maxBatch: maxConcurrency, extraArgs: ['--max-context', String(maxPromptTokens + maxTokens + 16)] }
}

export function emptySweepResults(o: SweepOptions): SweepResults {
  return {
    kind: 'dbcluster-bench-sweep',
    version: 1,
    model: o.model,
    settings: { nodes: o.nodes, concurrency: o.concurrency, prompt_tokens: o.promptTokens, max_tokens: o.maxTokens, requests_per_level: o.requestsPerLevel ?? null, threads_per_process: o.threads, pinned_cores: o.pinCores },
    started_at: new Date().toISOString(),
    finished_at: null,
    partial: true,
    series: [],
  }
}

/** Runs the sweep, filling `results` (create it with emptySweepResults) as it goes; it stays partial when stopped. */
export async function runSweep(o: SweepOptions, results: SweepResults = emptySweepResults(o)): Promise<SweepResults> {
  const target = benchTargetArgs(Math.max(...o.concurrency), Math.max(...o.promptTokens), o.maxTokens)
  for (const nodes of o.nodes) {
    if (o.signal?.aborted) break
    o.onTarget?.(`${nodes === 1 ? 'one process' : `a ${nodes}-node cluster`} on ${o.model}`)
    const server: ServeTarget = await startServeTarget({ model: o.model, nodes, threads: o.threads, pinCores: o.pinCores, backend: o.backend, ...target })
    try {
      for (const promptTokens of o.promptTokens) {
        if (o.signal?.aborted) break
        const series: SweepSeries = { nodes, prompt_tokens: promptTokens, target: server.label, levels: [] }
        await runServeSweep({
          url: server.url,
          concurrency: o.concurrency,
          promptTokens,
          maxTokens: o.maxTokens,
          requestsPerLevel: o.requestsPerLevel,
          signal: o.signal,
          onProgress: (p) => o.onProgress?.(series, p),
          onLevel: (level) => {
            if (series.levels.length === 0) results.series.push(series)
            series.levels.push(level)
            o.onUpdate?.(results)
          },
        })
      }
    } finally {
      await server.stop()
    }
  }
  const complete = results.series.length === o.nodes.length * o.promptTokens.length && results.series.every((s) => s.levels.length === o.concurrency.length)
  results.partial = !complete
  results.finished_at = new Date().toISOString()
  return results
}
