/** `bench decode --constrained`: plain and constrained steps alternate on a tiny model with the real Qwen3 vocabulary,
 * every batch size is reported, the ratio is the two rates', and the constrained rows' cost parts are measured. */
import { expect, test } from 'bun:test'
import { runConstrainedDecodeBench } from '../../src/bench/constrained-decode.ts'
import { selectBackend } from '../../src/tensor/select-backend.ts'
import { synthModel } from '../support/synth-models.ts'
import { SCHEMAS } from './schema-corpus.ts'

test('reports plain and constrained tok/s per batch size, their ratio and the mask and sampling costs', async () => {
  const dir = await synthModel('qwen3', 'q4')
  const { backend } = selectBackend('cpu', { threads: 1 })
  const r = await runConstrainedDecodeBench(dir, backend, 'cpu', {
    batches: [1, 3],
    promptTokens: 8,
    decodeSteps: 6,
    schema: SCHEMAS.person!,
  })
  expect(r.decode_steps).toBe(6)
  expect(r.results.map((row) => row.batch)).toEqual([1, 3])
  for (const row of r.results) {
    expect(row.plain_tps).toBeGreaterThan(0)
    expect(row.constrained_tps).toBeGreaterThan(0)
    expect(row.ratio).toBeCloseTo(row.constrained_tps / row.plain_tps, 1)
    expect(row.mask_ms_p50).toBeGreaterThan(0)
    expect(row.mask_ms_p90).toBeGreaterThanOrEqual(row.mask_ms_p50)
    expect(row.sample_ms_p50).toBeGreaterThan(0)
    expect(row.plain_sample_ms_p50).toBeGreaterThan(0)
    expect(row.forward_ms_p50).toBeGreaterThan(0)
    expect(row.plain_forward_ms_p50).toBeGreaterThan(0)
    expect(row.restarts).toBeGreaterThanOrEqual(0)
  }
  // the schema is compiled once: the second batch size takes it from the cache
  expect(r.results[1]!.compile_ms).toBeLessThan(r.results[0]!.compile_ms)
}, 120_000)
