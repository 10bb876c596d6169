/** `bench accuracy` on a small synthetic q4 Qwen3 (group 64, so the AVX-512 kernels take it): every kernel path this
 * machine has, each in its own process, against the float64 reference. Bounds are loose: the figures measured here
 * (Zen 5, 2026-12-07: int8 paths mean gap ≲ 1% of the logits' std, rms Δ 5–7%; float paths ~0) sit well inside them. */
import { describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import {
  ensureGenericShim,
  klDivergence,
  runAccuracyBench,
  scoreRuns,
  type PathFigures,
} from '../../src/bench/accuracy.ts'
import { probe as probeMlx } from '../../src/tensor/mlx.ts'
import { ReferenceDecoder } from '../reference/decoder.ts'
import { synthModel } from '../support/synth-models.ts'

describe('accuracy figures', () => {
  test('KL is 0 for equal logits and grows as they part', () => {
    const p = [1, 2, 3, 0.5]
    expect(klDivergence(p, p)).toBeCloseTo(0, 12)
    expect(klDivergence(p, [1, 2, 3.1, 0.5])).toBeGreaterThan(0)
    expect(klDivergence(p, [1, 2, 4, 0.5])).toBeGreaterThan(klDivergence(p, [1, 2, 3.1, 0.5]))
    // a shift of every logit leaves the distribution
    expect(klDivergence(p, [2, 3, 4, 1.5])).toBeCloseTo(0, 12)
  })

  test('gap, top-1 and rms are read at the positions the path chose from', () => {
    // vocab 3, prompt [0], 2 steps: the path chose token 1 (reference prefers 2 by 0.5), then token 0 (agreeing)
    const run = { tokens: [0, 1, 0], promptLength: 1, logits: Float32Array.of(0, 1, 0.9, 2, 0, 0) }
    const reference = (tokens: number[]) => {
      expect(tokens).toEqual([0, 1])
      return [Float64Array.of(0, 1, 1.5), Float64Array.of(2, 0, 0)]
    }
    const f = scoreRuns('x', [run], reference)
    expect(f.positions).toBe(2)
    expect(f.top1).toBe(1)
    expect(f.gap_mean).toBeCloseTo(0.25, 6)
    expect(f.gap_max).toBeCloseTo(0.5, 6)
    expect(f.rms_diff).toBeCloseTo(Math.sqrt(0.36 / 3) / 2, 4)
  })
})

test('every kernel path here against the float64 reference (synthetic q4, group 64)', async () => {
  const dir = await synthModel('qwen3', 'q4', { groupSize: 64 })
  const lines: string[] = []
  const result = await runAccuracyBench(dir, {
    paths: ['avx512', 'avx2', 'avx512-exact', 'generic', 'mlx'],
    steps: 12,
    reference: (d) => {
      const decoder = new ReferenceDecoder(d)
      return (tokens) => decoder.logits(tokens)
    },
    genericShim: ensureGenericShim(join(import.meta.dir, '..', '..')),
    mlx: probeMlx(),
    onProgress: (line) => lines.push(line),
  })
  expect(lines.some((l) => l.includes('decoding'))).toBe(true)
  const measured = result.results.filter((r): r is PathFigures => 'positions' in r)
  for (const r of result.results) if ('unavailable' in r) console.log(`${r.path}: skipped (${r.unavailable})`)
  expect(measured.length).toBeGreaterThan(0)
  for (const r of measured) {
    console.log(JSON.stringify(r))
    expect(r.positions).toBe(36)
    // --precision exact keeps the activations in float: as close to the reference as the generic C build
    const float = r.path === 'generic' || r.path === 'mlx' || r.path.endsWith('-exact')
    expect(r.logit_std).toBeGreaterThan(0)
    expect(r.kl_mean).toBeLessThan(float ? 1e-5 : 0.02)
    expect(r.gap_mean_share).toBeLessThan(float ? 1e-3 : 0.05)
    expect(r.rms_diff_share).toBeLessThan(float ? 0.005 : 0.2)
    expect(r.top1_share).toBeGreaterThanOrEqual(float ? 1 : 0.6)
  }
}, 60_000)
