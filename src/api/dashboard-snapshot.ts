/** One JSON snapshot of the head for the dashboard: the serving metrics' current values, uptime, the throughput of the
 * last minutes, the transport between the nodes and the cluster's trust, plus /health's extra fields. */
import type { ServingMetrics } from '../engine/metrics.ts'
import type { Scheduler } from '../engine/scheduler.ts'
import type { ThroughputHistory } from './throughput-history.ts'

const sum = (values: Map<string, number>) => [...values.values()].reduce((a, b) => a + b, 0)
const mean = (h: { sum: number; count: number }) => (h.count ? h.sum / h.count : null)

/** Every token the head has generated since it started (the counter the throughput history samples). */
export const generatedTokens = (metrics: ServingMetrics) => sum(metrics.generatedTokens.values)

/** What carries activations between this cluster's nodes, told from /health's fields. */
export interface Transport {
  kind: 'none' | 'sealed' | 'ring' | 'jaccl' | 'mlx'
  label: string
  /** Whether what crosses it is encrypted and authenticated. */
  encrypted: boolean
  /** Thunderbolt RDMA (jaccl): null where the node does not say which MLX transport it joined. */
  rdma: boolean | null
}

export function transportOf(health: Record<string, unknown>): Transport {
  const tp = health.tensor_parallel as { transport?: unknown } | undefined
  switch (tp?.transport) {
    case 'sealed':
      return { kind: 'sealed', label: 'sealed TCP (tensor parallel)', encrypted: true, rdma: false }
    case 'jaccl':
      return {
        kind: 'jaccl',
        label: 'jaccl: MLX over Thunderbolt RDMA (tensor parallel)',
        encrypted: false,
        rdma: true,
      }
    case 'ring':
      return { kind: 'ring', label: 'ring: MLX over TCP (tensor parallel)', encrypted: false, rdma: false }
    case 'mlx':
      return {
        kind: 'mlx',
        label: 'MLX distributed (tensor parallel; ring or jaccl, not reported)',
        encrypted: false,
        rdma: null,
      }
  }
  if (typeof health.nodes === 'number' && health.nodes > 1)
    return { kind: 'sealed', label: 'sealed TCP links between pipeline stages', encrypted: true, rdma: false }
  return { kind: 'none', label: 'one node: nothing crosses a link', encrypted: true, rdma: false }
}

/** The prefix cache's hit rate since start: prompt tokens served from cached blocks over those looked up (null: none
 * looked up yet); absent when the node keeps no cache (its /health has no prefix_cache). */
export function prefixCacheOf(m: ServingMetrics, health: Record<string, unknown>) {
  if (!health.prefix_cache) return null
  const hit = sum(m.prefixCache.hitTokens.values)
  const query = sum(m.prefixCache.queryTokens.values)
  return {
    hit_tokens: hit,
    query_tokens: query,
    hit_rate: query ? hit / query : null,
    blocks: sum(m.prefixCache.blocks.values),
  }
}

export function dashboardSnapshot(deps: {
  metrics: ServingMetrics
  scheduler: Scheduler
  modelId: string
  health: () => Record<string, unknown>
  throughput: ThroughputHistory
  startedAt: number
  now?: () => number
}) {
  const m = deps.metrics
  const at = (deps.now ?? Date.now)()
  const generated = generatedTokens(m)
  deps.throughput.observe(at, generated)
  const health = deps.health()
  return {
    at,
    model: deps.modelId,
    degraded: deps.scheduler.degraded ?? null,
    /** Since the API started serving (ms since the epoch), and for how long. */
    started_at: deps.startedAt,
    uptime_s: Math.max(0, (at - deps.startedAt) / 1000),
    queue_depth: deps.scheduler.queueDepth,
    running: deps.scheduler.running,
    batch_size: sum(m.batchSize.values),
    requests: Object.fromEntries(m.requests.values),
    prompt_tokens: sum(m.promptTokens.values),
    generated_tokens: generated,
    /** Tokens per second in each interval of the last minutes, sampled on the head. */
    throughput: {
      interval_s: deps.throughput.intervalMs / 1000,
      window_s: (deps.throughput.intervalMs * deps.throughput.points) / 1000,
      points: deps.throughput.series(),
    },
    ttft_mean_s: mean(m.ttft),
    inter_token_mean_s: mean(m.interToken),
    step_mean_s: mean(m.stepTime),
    /** Compute time of one step on each stage, by rank (clusters only), and the time between stages. */
    stage_step_mean_s: Object.fromEntries(m.stageStepTime.entries().map(([rank, h]) => [rank, mean(h)])),
    hop_mean_s: mean(m.hopTime),
    link_errors: Object.fromEntries(m.linkErrors.values),
    transport: transportOf(health),
    prefix_cache: prefixCacheOf(m, health),
    /** The coordinator's verdict on the cluster, its weakest member's (none, software, hardware); null: not vouched. */
    cluster_trust: (health.cluster_trust as string | null | undefined) ?? null,
    health,
  }
}
