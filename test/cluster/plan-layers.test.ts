import { describe, expect, test } from 'bun:test'
import {
  describePlan,
  largestRemainder,
  planLayers,
  splitByBytes,
  type ModelFootprint,
} from '../../src/cluster/plan-layers.ts'

const GiB = 1024 ** 3
const model = (layers: number, perLayer = 0.5 * GiB): ModelFootprint => ({
  numLayers: layers,
  layerBytes: Array(layers).fill(perLayer),
  embeddingBytes: 0.3 * GiB,
  headBytes: 0.3 * GiB,
  kvBytesPerTokenLayer: 2 * 8 * 128 * 2,
})

describe('planLayers', () => {
  test('largest remainder on uneven memory', () => {
    // 28 layers over 64 GiB and 36 GiB: quotas 17.92 and 10.08 → 18 / 10 (the seeds' 18/10 split)
    expect(largestRemainder(28, [64, 36])).toEqual([18, 10])
    // quotas 9.33/9.33/9.33 → remainder 1 goes to the lowest index on a tie
    expect(largestRemainder(28, [1, 1, 1])).toEqual([10, 9, 9])
    // 10 layers by 5:3:2 exactly
    expect(largestRemainder(10, [5, 3, 2])).toEqual([5, 3, 2])
    // a tiny node still gets one layer
    expect(largestRemainder(4, [100, 1])).toEqual([3, 1])
    expect(() => largestRemainder(2, [1, 1, 1])).toThrow(/cannot be spread over 3 nodes/)
  })

  test('stages are contiguous, cover every layer, and carry the embedding and head', () => {
    const plan = planLayers(
      [
        { id: 'a', usableBytes: 64 * GiB },
        { id: 'b', usableBytes: 36 * GiB },
      ],
      model(28),
    )
    expect(plan.stages.map((s) => [s.lo, s.hi])).toEqual([
      [0, 18],
      [18, 28],
    ])
    expect(plan.stages[0]!.weightBytes).toBeCloseTo(18 * 0.5 * GiB + 0.3 * GiB)
    expect(plan.stages[1]!.weightBytes).toBeCloseTo(10 * 0.5 * GiB + 0.3 * GiB)
    expect(plan.stages[1]!.kvBytes).toBe(4096 * 10 * 4096)
    expect(plan.fits).toBe(true)
  })

  test('a manual split overrides the weighting and is validated', () => {
    const nodes = [
      { id: 'a', usableBytes: 64 * GiB },
      { id: 'b', usableBytes: 64 * GiB },
    ]
    expect(planLayers(nodes, model(28), { split: [20, 8] }).stages.map((s) => s.hi - s.lo)).toEqual([20, 8])
    expect(() => planLayers(nodes, model(28), { split: [20, 9] })).toThrow(/covers 29 layers, the model has 28/)
    expect(() => planLayers(nodes, model(28), { split: [28] })).toThrow(/1 parts for 2 nodes/)
  })

  test('a plan that cannot fit names the node that is short and by how much', () => {
    const plan = planLayers(
      [
        { id: 'big', usableBytes: 40 * GiB },
        { id: 'small', usableBytes: 4 * GiB },
      ],
      model(28, 1 * GiB),
      { split: [20, 8] },
    )
    expect(plan.fits).toBe(false)
    expect(plan.shortfalls.map((s) => s.node)).toEqual(['small'])
    const short = plan.shortfalls[0]!.shortBytes
    expect(short).toBeCloseTo(8 * GiB + 0.3 * GiB + 4096 * 8 * 4096 - 4 * GiB)
    expect(describePlan(plan).at(-1)).toMatch(/does not fit: small is short by 4\.\d\d GiB/)
  })

  test('layers weigh what they cost: a big head moves layers off the last stage, heavy layers count more', () => {
    // 8 equal layers of 1 byte and no ends: an even split
    expect(splitByBytes(Array(8).fill(1), 0, 0, [1, 1])).toEqual([4, 4])
    // the head (tied embedding) weighs 4 layers: the last node takes fewer layers so the bytes even out
    expect(splitByBytes(Array(8).fill(1), 0, 4, [1, 1])).toEqual([6, 2])
    // MoE layers 0..3 weigh 3 each, dense 4..7 weigh 1: the cut falls early
    expect(splitByBytes([3, 3, 3, 3, 1, 1, 1, 1], 0, 0, [1, 1])).toEqual([3, 5])
    // every node keeps at least one layer, however small its share or heavy the ends
    expect(splitByBytes(Array(4).fill(1), 0, 100, [1, 1, 1])).toEqual([2, 1, 1])
    expect(() => splitByBytes([1, 1], 0, 0, [1, 1, 1])).toThrow(/cannot be spread over 3 nodes/)

    const tiedHead: ModelFootprint = {
      ...model(8, 1 * GiB),
      embeddingBytes: 0,
      headBytes: 4 * GiB,
      kvBytesPerTokenLayer: 0,
    }
    const plan = planLayers(
      [
        { id: 'a', usableBytes: 64 * GiB },
        { id: 'b', usableBytes: 64 * GiB },
      ],
      tiedHead,
    )
    // in a plan a layer also counts the work besides its matmuls (LAYER_WORK = 2): 5 × 2 | 3 × 2 + 4
    expect(plan.stages.map((s) => s.hi - s.lo)).toEqual([5, 3])
    expect(plan.stages.map((s) => s.weightBytes / GiB)).toEqual([5, 7])
  })

  test('by compute where it fits (the head streams, the embedding is a lookup), by memory where it does not', () => {
    // 8 layers of 1 GiB, an embedding and an untied head of 4 GiB each, no KV
    const untied: ModelFootprint = {
      ...model(8, 1 * GiB),
      embeddingBytes: 4 * GiB,
      headBytes: 4 * GiB,
      kvBytesPerTokenLayer: 0,
    }
    const two = (usable: number) => [
      { id: 'a', usableBytes: usable },
      { id: 'b', usableBytes: usable },
    ]
    // per step, stage 0 streams its layers, stage 1 its layers and the head; a layer counts twice its bytes
    // (LAYER_WORK): 5 × 2 | 3 × 2 + 4
    const roomy = planLayers(two(64 * GiB), untied)
    expect([roomy.rule, roomy.stages.map((s) => s.hi - s.lo)]).toEqual(['compute', [5, 3]])
    expect(roomy.stages.map((s) => s.weightBytes / GiB)).toEqual([9, 7])
    expect(describePlan(roomy)[0]).toMatch(/split by compute/)
    // 8.5 GiB each: stage 0 would hold 9 GiB, so the split evens out what each holds: 4 + 4 | 4 + 4
    const tight = planLayers(two(8.5 * GiB), untied)
    expect([tight.rule, tight.fits, tight.stages.map((s) => s.hi - s.lo)]).toEqual(['memory', true, [4, 4]])
    expect(describePlan(tight)[0]).toMatch(/split by memory/)
    expect(planLayers(two(64 * GiB), untied, { split: [3, 5] }).rule).toBe('manual')
  })

  test('KV is reserved per layer for every sequence: sliding-window and recurrent layers hold less', () => {
    const hybrid: ModelFootprint = {
      ...model(4, 0),
      embeddingBytes: 0,
      headBytes: 0,
      // layers 0 and 2 keep every token; 1 and 3 hold a fixed state
      layerKvBytes: (l, tokens) => (l % 2 === 0 ? tokens * 1000 : 5000),
    }
    const plan = planLayers([{ id: 'a', usableBytes: GiB }], hybrid, { kv: { sequences: 8, tokens: 1024 } })
    expect(plan.kvTokens).toBe(8 * 1024)
    expect(plan.stages[0]!.kvBytes).toBe(8 * (2 * 1024 * 1000 + 2 * 5000))
  })
})
