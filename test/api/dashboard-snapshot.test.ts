/** The dashboard snapshot's node fields from what a head reports: the transport told from /health (a node alone, a
 * sealed pipeline, each tensor-parallel transport), the cluster's trust, uptime and the throughput history. */
import { expect, test } from 'bun:test'
import { dashboardSnapshot, prefixCacheOf, transportOf } from '../../src/api/dashboard-snapshot.ts'
import { ThroughputHistory } from '../../src/api/throughput-history.ts'
import { ServingMetrics } from '../../src/engine/metrics.ts'
import type { Scheduler } from '../../src/engine/scheduler.ts'

test('the transport as each kind of head reports it', () => {
  const cases: [Record<string, unknown>, string, boolean, boolean | null][] = [
    [{ nodes: 1 }, 'none', true, false],
    [{ nodes: 3, ring: {}, members: [] }, 'sealed', true, false],
    [{ nodes: 2, tensor_parallel: { ranks: 2, transport: 'sealed', sampling: 'split' } }, 'sealed', true, false],
    [{ nodes: 2, tensor_parallel: { ranks: 2, transport: 'jaccl', sampling: 'split' } }, 'jaccl', false, true],
    [{ nodes: 2, tensor_parallel: { ranks: 2, transport: 'ring', sampling: 'split' } }, 'ring', false, false],
    // an MLX group that does not say which transport it joined: not encrypted, RDMA unknown
    [{ nodes: 2, tensor_parallel: { ranks: 2, transport: 'mlx', sampling: 'gathered' } }, 'mlx', false, null],
  ]
  for (const [health, kind, encrypted, rdma] of cases)
    expect(transportOf(health)).toMatchObject({ kind, encrypted, rdma })
})

test('uptime, trust and throughput in the snapshot, on a clock passed in', () => {
  const metrics = new ServingMetrics()
  const scheduler = { degraded: null, queueDepth: 0, running: 0 } as unknown as Scheduler
  const throughput = new ThroughputHistory(1000, 10)
  let now = 10_000
  let trust: string | null = 'software'
  const snapshot = () =>
    dashboardSnapshot({
      metrics,
      scheduler,
      modelId: 'm',
      health: () => ({ nodes: 2, cluster_trust: trust }),
      throughput,
      startedAt: 4_000,
      now: () => now,
    })
  const first = snapshot()
  expect(first).toMatchObject({ started_at: 4_000, uptime_s: 6, cluster_trust: 'software', generated_tokens: 0 })
  expect(first.transport.kind).toBe('sealed')
  expect(first.throughput).toEqual({ interval_s: 1, window_s: 10, points: [] })
  metrics.generatedTokens.inc({}, 30)
  now += 2000
  trust = null
  const second = snapshot()
  expect(second.uptime_s).toBe(8)
  expect(second.cluster_trust).toBeNull()
  expect(second.throughput.points).toEqual([{ at: 12_000, tokens: 30, tokens_per_s: 15 }])
})

test('the prefix cache’s hit rate from its counters; null before any prompt, absent on a node without a cache', () => {
  const metrics = new ServingMetrics()
  expect(prefixCacheOf(metrics, { nodes: 1 })).toBeNull()
  const withCache = { nodes: 1, prefix_cache: { blocks: 0, bytes: 0 } }
  expect(prefixCacheOf(metrics, withCache)).toEqual({ hit_tokens: 0, query_tokens: 0, hit_rate: null, blocks: 0 })
  metrics.prefixCache.queryTokens.inc({}, 400)
  metrics.prefixCache.hitTokens.inc({}, 128)
  metrics.prefixCache.blocks.set(5)
  expect(prefixCacheOf(metrics, withCache)).toEqual({ hit_tokens: 128, query_tokens: 400, hit_rate: 0.32, blocks: 5 })
})
