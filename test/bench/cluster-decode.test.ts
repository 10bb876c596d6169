/** `bench decode --nodes N` end to end on a tiny model (one process on 1 and N threads, then an N-node cluster), and the
 * per-token breakdown read from the head's decode-only histograms. */
import { expect, test } from 'bun:test'
import { runClusterDecodeBench, stepBreakdown } from '../../src/bench/cluster-decode.ts'
import { ServingMetrics } from '../../src/engine/metrics.ts'
import { synthModel } from '../support/synth-models.ts'

test('the breakdown reads decode-only steps per stage and the hops, leaving prompt chunks out', () => {
  const m = new ServingMetrics()
  m.stageStepTime.observe('0', 1.5) // a prompt chunk: only in the all-steps family
  for (const [a, b, hop] of [
    [0.01, 0.02, 0.001],
    [0.03, 0.04, 0.003],
  ]) {
    m.decodeStageStepTime.observe('0', a!)
    m.decodeStageStepTime.observe('1', b!)
    m.decodeHopTime.observe(hop!)
  }
  const b = stepBreakdown(m.render())
  expect(b.stages.map((s) => s.count)).toEqual([2, 2])
  expect(b.stages[0]!.sum).toBeCloseTo(0.04)
  expect(b.stages[1]!.sum).toBeCloseTo(0.06)
  expect(b.hops.count).toBe(2)
  expect(b.hops.sum).toBeCloseTo(0.004)
})

test('a 2-node cluster decodes, and the result carries every ratio and a per-token breakdown', async () => {
  const model = await synthModel('qwen3', 'bf16')
  const r = await runClusterDecodeBench({ model, nodes: 2, maxTokens: 8, promptTokens: 8, runs: 1, backend: 'cpu' })
  expect(r.cluster_tps).toBeGreaterThan(0)
  expect(r.single_1_thread_tps).toBeGreaterThan(0)
  expect(r.ratio_vs_single_1_thread).toBeCloseTo(r.cluster_tps / r.single_1_thread_tps, 2)
  expect(r.per_token_ms.stages).toHaveLength(2)
  expect(r.per_token_ms.stages.every((ms) => ms > 0)).toBe(true)
}, 120_000)
