/** One JSON snapshot of the head for the dashboard: the serving metrics' current values plus /health's extra fields. */
import type { ServingMetrics } from '../engine/metrics.ts'
import type { Scheduler } from '../engine/scheduler.ts'

const sum = (values: Map<string, number>) => [...values.values()].reduce((a, b) => a + b, 0)
const mean = (h: { sum: number; count: number }) => (h.count ? h.sum / h.count : null)

export function dashboardSnapshot(deps: {
  metrics: ServingMetrics
  scheduler: Scheduler
  modelId: string
  health: () => Record<string, unknown>
}) {
  const m = deps.metrics
  return {
    at: Date.now(),
    model: deps.modelId,
    degraded: deps.scheduler.degraded ?? null,
    queue_depth: deps.scheduler.queueDepth,
    running: deps.scheduler.running,
    batch_size: sum(m.batchSize.values),
    requests: Object.fromEntries(m.requests.values),
    prompt_tokens: sum(m.promptTokens.values),
    generated_tokens: sum(m.generatedTokens.values),
    ttft_mean_s: mean(m.ttft),
    inter_token_mean_s: mean(m.interToken),
    step_mean_s: mean(m.stepTime),
    /** Compute time of one step on each stage, by rank (clusters only), and the time between stages. */
    stage_step_mean_s: Object.fromEntries(m.stageStepTime.entries().map(([rank, h]) => [rank, mean(h)])),
    hop_mean_s: mean(m.hopTime),
    link_errors: Object.fromEntries(m.linkErrors.values),
    health: deps.health(),
  }
}
