/** Checkpoint footprint: per-layer weight bytes from the headers equal what a stage of that layer loads. */
import { describe, expect, test } from 'bun:test'
import { checkpointFootprint, layerWeightBytes } from '../../src/model/footprint.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { synthModel } from '../support/synth-models.ts'

const backend = openCpuBackend()

describe('checkpoint footprint', () => {
  test('layer, embedding and head bytes add up to what the stages load (untied llama, mixed quantization)', async () => {
    const dir = await synthModel('llama', 'q4', { quantOverrides: { 'model.layers.1.mlp.down_proj': false } })
    const f = checkpointFootprint(dir)
    expect(f.layerBytes).toHaveLength(3)
    // the float down_proj makes layer 1 heavier than its quantized neighbours
    expect(f.layerBytes[1]!).toBeGreaterThan(f.layerBytes[0]!)
    expect(f.layerBytes[0]).toBe(f.layerBytes[2]!)
    expect(layerWeightBytes(dir)).toEqual(f.layerBytes)
    const first = ModelStage.load(dir, backend, { hi: 1, slots: 1, maxLen: 8 })
    const middle = ModelStage.load(dir, backend, { lo: 1, hi: 2, slots: 1, maxLen: 8 })
    const last = ModelStage.load(dir, backend, { lo: 2, slots: 1, maxLen: 8 })
    expect(first.weightBytes).toBe(f.embeddingBytes + f.layerBytes[0]!)
    expect(middle.weightBytes).toBe(f.layerBytes[1]!)
    expect(last.weightBytes).toBe(f.layerBytes[2]! + f.headBytes)
    for (const s of [first, middle, last]) s.close()
  })

  test('a tied head counts the embedding it reuses; sliding-window layers stop growing at their ring', async () => {
    const dir = await synthModel('gemma3', 'bf16', { slidingWindow: 4, slidingWindowPattern: 3 })
    const f = checkpointFootprint(dir)
    const last = ModelStage.load(dir, backend, { lo: 2, slots: 1, maxLen: 8 })
    expect(last.weightBytes).toBe(f.layerBytes[2]! + f.headBytes)
    expect(f.headBytes).toBeGreaterThan(f.embeddingBytes)
    last.close()
    const perToken = 2 * 2 * 16 * 4
    expect(f.kvBytesPerTokenLayer).toBe(perToken)
    expect([f.layerKvBytes(0, 1000), f.layerKvBytes(2, 1000), f.layerKvBytes(0, 3)]).toEqual([
      8 * perToken,
      1000 * perToken,
      3 * perToken,
    ])
  })
})
