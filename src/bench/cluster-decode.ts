/** `bench decode --nodes N`: batch-1 decode through a cluster of N nodes on this machine (one thread each, over sealed
 * loopback links) against one process with one thread (the same work per core: the hops' cost) and one process with
 * N threads (the same total cores), and where each token's time goes: every stage's compute and the hops. */
import { median } from './stats.ts'
import { runLoad, type LoadResult } from './load.ts'
import { startServeTarget } from './serve-target.ts'

export interface ClusterDecodeOptions {
  model: string
  nodes: number
  maxTokens: number
  promptTokens: number
  runs: number
  backend?: string
  onProgress?: (line: string) => void
}

export interface ClusterDecodeResult {
  model: string
  nodes: number
  max_tokens: number
  runs: number
  single_1_thread_tps: number
  single_n_threads_tps: number
  cluster_tps: number
  /** cluster ÷ one process with one thread: the pipeline's overhead at batch 1 (goal ≥ 0.9). */
  ratio_vs_single_1_thread: number
  /** cluster ÷ one process with N threads (the same total cores). */
  ratio_vs_single_n_threads: number
  /** Per decoded token on the cluster, from the head's /metrics: compute per stage and time between stages. */
  per_token_ms: { stages: number[]; hops: number }
}

async function measure(url: string, o: ClusterDecodeOptions): Promise<number[]> {
  await runLoad(url, { concurrency: 1, requestsPerClient: 1, promptTokens: 8, maxTokens: 4 }) // warm up
  const tps: number[] = []
  for (let i = 0; i < o.runs; i++) {
    const r: LoadResult = await runLoad(url, {
      concurrency: 1,
      requestsPerClient: 1,
      promptTokens: o.promptTokens,
      maxTokens: o.maxTokens,
    })
    if (r.errors.length) throw new Error(`decode run failed: ${r.errors[0]}`)
    tps.push(r.stream_decode_tps)
  }
  return tps
}

/** Sums and counts of the decode-only stage and hop histograms in a Prometheus text page (prompt chunks left out, so
 * the figures are per decoded token at batch 1). */
export function stepBreakdown(metrics: string): {
  stages: { sum: number; count: number }[]
  hops: { sum: number; count: number }
} {
  const stages: { sum: number; count: number }[] = []
  for (const m of metrics.matchAll(/^dbcluster_decode_stage_step_seconds_(sum|count)\{rank="(\d+)"\} (\S+)$/gm)) {
    const r = Number(m[2])
    stages[r] ??= { sum: 0, count: 0 }
    stages[r]![m[1] as 'sum' | 'count'] = Number(m[3])
  }
  const hop = (k: string) =>
    Number(new RegExp(`^dbcluster_decode_hop_seconds_${k} (\\S+)$`, 'm').exec(metrics)?.[1] ?? 0)
  return { stages, hops: { sum: hop('sum'), count: hop('count') } }
}

export async function runClusterDecodeBench(o: ClusterDecodeOptions): Promise<ClusterDecodeResult> {
  const say = o.onProgress ?? (() => {})
  const base = { model: o.model, maxBatch: 1, backend: o.backend }
  const single = async (threads: number) => {
    say(`one process, ${threads} thread(s): ${o.runs} runs of ${o.maxTokens} tokens`)
    const t = await startServeTarget({ ...base, nodes: 1, threads })
    try {
      return median(await measure(t.url, o))
    } finally {
      await t.stop()
    }
  }
  const one = await single(1)
  const many = await single(o.nodes)
  say(`${o.nodes} nodes, 1 thread each: ${o.runs} runs of ${o.maxTokens} tokens`)
  const c = await startServeTarget({ ...base, nodes: o.nodes, threads: 1 })
  let clusterTps: number
  let breakdown: ReturnType<typeof stepBreakdown>
  try {
    clusterTps = median(await measure(c.url, o))
    breakdown = stepBreakdown(await (await fetch(`${c.url}/metrics`)).text())
  } finally {
    await c.stop()
  }
  const ms = (x: { sum: number; count: number } | undefined) =>
    x && x.count ? Math.round((x.sum / x.count) * 1e5) / 100 : 0
  const round = (v: number) => Math.round(v * 1000) / 1000
  return {
    model: o.model,
    nodes: o.nodes,
    max_tokens: o.maxTokens,
    runs: o.runs,
    single_1_thread_tps: one,
    single_n_threads_tps: many,
    cluster_tps: clusterTps,
    ratio_vs_single_1_thread: round(clusterTps / one),
    ratio_vs_single_n_threads: round(clusterTps / many),
    per_token_ms: { stages: breakdown.stages.map(ms), hops: ms(breakdown.hops) },
  }
}
