/** The shard seam: stages chained in one process == the monolithic model; batched rows == rows alone; chunked prefill ==
 * one-shot prefill; synthetic weights give varied greedy output. */
import { describe, expect, test } from 'bun:test'
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { generate } from '../support/generate.ts'
import { LocalPipeline } from '../../src/engine/pipeline.ts'
import { GREEDY, argmax } from '../../src/model/sampler.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { maxAbsDiff } from '../reference/kernels.ts'
import { copyOfModel, synthModel } from '../support/synth-models.ts'

const backend = openCpuBackend()
const PROMPT = [9707, 11, 1879, 0, 3555, 525, 1207, 30]

async function greedyTokens(pipeline: LocalPipeline, prompt: number[], n: number, prefillChunk = 512) {
  let tokens: number[] = []
  for await (const e of generate(
    pipeline,
    { promptIds: prompt, maxTokens: n, sampling: GREEDY, eosTokenIds: [], prefillChunk },
    () => '',
  )) {
    if (e.type === 'done') tokens = e.tokens
  }
  return tokens
}

describe('shard composition', () => {
  for (const [arch, dtype] of [
    ['qwen3', 'f32'],
    ['llama', 'f32'],
    ['qwen2', 'bf16'],
    ['qwen3', 'q4'],
    ['llama', 'q8'],
  ] as const)
    test(`${arch} ${dtype}: 2 and 3 stages chained equal the monolithic model`, async () => {
      const dir = await synthModel(arch, dtype)
      const mono = ModelStage.load(dir, backend, { slots: 2, maxLen: 64 })
      const two = [
        ModelStage.load(dir, backend, { hi: 2, slots: 2, maxLen: 64 }),
        ModelStage.load(dir, backend, { lo: 2, slots: 2, maxLen: 64 }),
      ]
      const three = [0, 1, 2].map((i) => ModelStage.load(dir, backend, { lo: i, hi: i + 1, slots: 2, maxLen: 64 }))
      expect(two[0]!.range).toEqual({ lo: 0, hi: 2, first: true, last: false })
      const step = {
        tokens: Int32Array.from(PROMPT),
        slots: new Int32Array(PROMPT.length),
        positions: Int32Array.from(PROMPT.keys()),
      }
      const want = await new LocalPipeline([mono]).step(step)
      for (const stages of [two, three]) {
        const got = await new LocalPipeline(stages).step(step)
        if (dtype === 'f32') expect(maxAbsDiff(got, want)).toBeLessThan(1e-4)
        else expect(maxAbsDiff(got, want)).toBeLessThan(1e-3)
      }
      const greedy = await greedyTokens(new LocalPipeline([mono]), PROMPT, 8)
      expect(await greedyTokens(new LocalPipeline(three), PROMPT, 8)).toEqual(greedy)
      for (const s of [mono, ...two, ...three]) s.close()
    }, 60_000)

  test('a stage loads only the tensors of its layers', async () => {
    const dir = await synthModel('llama', 'bf16', { shardBytes: 8 * 1024 * 1024 })
    const last = ModelStage.load(dir, backend, { lo: 2, slots: 1, maxLen: 16 })
    // untied llama: the last stage holds layer 2, the final norm and lm_head, but not the embedding
    expect(last.range).toEqual({ lo: 2, hi: 3, first: false, last: true })
    const mono = ModelStage.load(dir, backend, { slots: 1, maxLen: 16 })
    expect(last.weightBytes).toBeLessThan(mono.weightBytes * 0.7)
    last.close()
    mono.close()
  })

  test('a middle stage opens only the files that hold its layers: it loads with every other file deleted', async () => {
    const dir = copyOfModel(await synthModel('qwen3', 'bf16', { shardBytes: 64 * 1024 }))
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')) as {
      weight_map: Record<string, string>
    }
    const needed = new Set(
      Object.entries(index.weight_map)
        .filter(([name]) => name.startsWith('model.layers.1.'))
        .map(([, f]) => f),
    )
    const all = new Set(Object.values(index.weight_map))
    expect(needed.size).toBeLessThan(all.size)
    for (const f of all) if (!needed.has(f)) rmSync(join(dir, f))
    const middle = ModelStage.load(dir, backend, { lo: 1, hi: 2, slots: 1, maxLen: 16 })
    expect(middle.range).toEqual({ lo: 1, hi: 2, first: false, last: false })
    const hidden = Float32Array.from({ length: 2 * 64 }, (_, i) => Math.sin(i))
    const out = middle.forward({ hidden, slots: Int32Array.of(0, 0), positions: Int32Array.of(0, 1) })
    expect(out.logits).toBeUndefined()
    expect(out.hidden!.length).toBe(2 * 64)
    expect(maxAbsDiff(out.hidden!, hidden)).toBeGreaterThan(1e-3) // the layer changed the residual stream
    expect(() =>
      middle.forward({ tokens: Int32Array.of(1), slots: Int32Array.of(0), positions: Int32Array.of(2) }),
    ).toThrow(/needs hidden states \[1, 64\]/)
    middle.close()
    expect(() => ModelStage.load(dir, backend, { slots: 1, maxLen: 16 })).toThrow(/listed in the index but missing/)
  })
})

describe('batching and prefill', () => {
  test('a batch of rows at different positions equals each row decoded alone', async () => {
    const dir = await synthModel('qwen3', 'f32')
    const stage = ModelStage.load(dir, backend, { slots: 3, maxLen: 64 })
    const prompts = [PROMPT.slice(0, 3), PROMPT.slice(2, 8), PROMPT.slice(1, 5)]
    prompts.forEach((p, slot) =>
      stage.forward({
        tokens: Int32Array.from(p),
        slots: new Int32Array(p.length).fill(slot),
        positions: Int32Array.from(p.keys()),
      }),
    )
    const next = [101, 202, 303]
    const batched = stage.forward({
      tokens: Int32Array.from(next),
      slots: Int32Array.of(0, 1, 2),
      positions: Int32Array.from(prompts.map((p) => p.length)),
    }).logits!
    const vocab = stage.config.vocabSize
    const alone = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
    prompts.forEach((p, i) => {
      alone.forward({
        tokens: Int32Array.from(p),
        slots: new Int32Array(p.length),
        positions: Int32Array.from(p.keys()),
      })
      const single = alone.forward({
        tokens: Int32Array.of(next[i]!),
        slots: Int32Array.of(0),
        positions: Int32Array.of(p.length),
      }).logits!
      expect(maxAbsDiff(batched.subarray(i * vocab, (i + 1) * vocab), single)).toBeLessThan(1e-4)
    })
    stage.close()
    alone.close()
  })

  test('reused logits (for sampling at once) equal fresh ones and land in one buffer the stage keeps', async () => {
    const dir = await synthModel('qwen3', 'q4')
    const fresh = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
    const reusing = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
    const step = (stage: ModelStage, tokens: number[], at: number, reuseLogits: boolean) =>
      stage.forward({
        tokens: Int32Array.from(tokens),
        slots: new Int32Array(tokens.length),
        positions: Int32Array.from(tokens, (_, i) => at + i),
        output: reuseLogits ? 'reused-logits' : 'logits',
      }).logits!
    const prefill = [Array.from(step(fresh, PROMPT, 0, false)), step(reusing, PROMPT, 0, true)] as const
    expect(Array.from(prefill[1])).toEqual(prefill[0])
    const buffer = prefill[1].buffer
    const decode = [
      Array.from(step(fresh, [42], PROMPT.length, false)),
      step(reusing, [42], PROMPT.length, true),
    ] as const
    expect(Array.from(decode[1])).toEqual(decode[0])
    expect(decode[1].buffer).toBe(buffer) // the same memory, overwritten
    expect(step(fresh, [7], PROMPT.length + 1, false).buffer).not.toBe(
      step(fresh, [8], PROMPT.length + 2, false).buffer,
    )
    fresh.close()
    reusing.close()
  })

  test('chunked prefill equals one-shot prefill', async () => {
    const dir = await synthModel('qwen2', 'f32')
    const one = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
    const chunked = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
    expect(await greedyTokens(new LocalPipeline([chunked]), PROMPT, 6, 3)).toEqual(
      await greedyTokens(new LocalPipeline([one]), PROMPT, 6),
    )
    one.close()
    chunked.close()
  })

  test('synthetic weights give varied, non-degenerate greedy output for every family', async () => {
    for (const arch of ['llama', 'qwen2', 'qwen3'] as const) {
      const stage = ModelStage.load(await synthModel(arch, 'bf16'), backend, { slots: 1, maxLen: 64 })
      const tokens = await greedyTokens(new LocalPipeline([stage]), PROMPT, 24)
      expect(tokens.length).toBe(24)
      expect(new Set(tokens).size).toBeGreaterThanOrEqual(6)
      stage.close()
    }
  })

  test('token ids outside the vocabulary and positions past the context are refused before any compute', async () => {
    const stage = ModelStage.load(await synthModel('qwen3', 'f32'), backend, { slots: 1, maxLen: 8 })
    expect(() =>
      stage.forward({ tokens: Int32Array.of(151936), slots: Int32Array.of(0), positions: Int32Array.of(0) }),
    ).toThrow(/token id 151936 is outside the model's vocabulary of 151936/)
    expect(() =>
      stage.forward({ tokens: Int32Array.of(-1), slots: Int32Array.of(0), positions: Int32Array.of(0) }),
    ).toThrow(/token id -1/)
    expect(() =>
      stage.forward({ tokens: Int32Array.of(5), slots: Int32Array.of(0), positions: Int32Array.of(8) }),
    ).toThrow(/position 8 exceeds the context of 8 tokens/)
    stage.close()
  })

  test('argmax of logits picks the first maximum', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1)
  })
})
