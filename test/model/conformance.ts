/** The conformance suite every family runs on the cpu backend (the Llama family's checks in golden/shard.test.ts, shared
 * here so a new family is one call): logits against the float64 reference (prefill + decode through the cache), cached
 * decode == full recompute, 2- and 3-stage composition == monolithic, batched rows == rows alone.
 * Tolerances as golden.test.ts: float weights max |Δ| < 1e-4 against the reference with an f32 KV cache; with the cpu
 * backend's default f16 cache, within F16_KV_TOLERANCE of max |logit|; quantized ones within 10% of max |logit| with the
 * reference's top token in our top 3 (the cpu kernels quantize activations to int8 blocks). */
import { describe, expect, test } from 'bun:test'
import { generate } from '../support/generate.ts'
import { LocalPipeline } from '../../src/engine/pipeline.ts'
import { GREEDY } from '../../src/model/sampler.ts'
import { ModelStage } from '../../src/model/shard.ts'
import type { SynthArch, SynthDtype, SynthSpec } from '../../src/model/synth.ts'
import type { Backend } from '../../src/tensor/backend.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { ReferenceDecoder } from '../reference/decoder.ts'
import { maxAbs, maxAbsDiff } from '../reference/kernels.ts'
import { synthModel } from '../support/synth-models.ts'

export const backend = openCpuBackend()
/** 9 prompt tokens: past a sliding window of 4, so ring caches wrap and steps are split. */
export const PROMPT = [9707, 11, 1879, 0, 3555, 525, 1207, 30, 77]
const DECODE = [42, 7, 151000]

function topK(values: ArrayLike<number>, k: number): number[] {
  return Array.from(values, (v, i) => [Number(v), i] as const)
    .sort((a, b) => b[0] - a[0])
    .slice(0, k)
    .map(([, i]) => i)
}

/** Keys and values rounded to f16 (unit roundoff 2^-11 ≈ 4.9e-4) move the logits of these small models by 3e-4 to
 * 1.8e-3 of max |logit| (measured over the families); 5e-3 is ten unit roundoffs. */
export const F16_KV_TOLERANCE = 5e-3

const isQuantized = (dtype: SynthDtype) => dtype === 'q4' || dtype === 'q8' || dtype === 'mxfp4'

/** Prefill (logits of every row) and decode steps against the float64 reference; returns the worst relative error. Float
 * weights are held to 1e-4 with an f32 cache (the model's arithmetic), to F16_KV_TOLERANCE with an f16 one. */
export function checkAgainstReference(
  dir: string,
  quantized: boolean,
  quantTolerance = 0.1,
  on: Backend = backend,
  topThree = true,
  kvDtype: 'f32' | 'f16' = 'f32',
): number {
  const stage = ModelStage.load(dir, on, { slots: 1, maxLen: 64, kvDtype })
  const reference = new ReferenceDecoder(dir)
  const vocab = stage.config.vocabSize
  let worst = 0
  const check = (got: Float32Array, want: Float64Array) => {
    const diff = maxAbsDiff(got, want)
    worst = Math.max(worst, diff / maxAbs(want))
    if (!quantized)
      expect(kvDtype === 'f32' ? diff : diff / maxAbs(want)).toBeLessThan(kvDtype === 'f32' ? 1e-4 : F16_KV_TOLERANCE)
    else {
      expect(diff / maxAbs(want)).toBeLessThan(quantTolerance)
      if (topThree) expect(topK(got, 3)).toContain(topK(want, 1)[0]!)
    }
  }
  try {
    const tokens = [...PROMPT]
    const prefill = stage.forward({
      tokens: Int32Array.from(tokens),
      slots: new Int32Array(tokens.length),
      positions: Int32Array.from(tokens.keys()),
      logitRows: Int32Array.from(tokens.keys()),
    }).logits!
    expect(prefill.length).toBe(tokens.length * vocab)
    const want = reference.logits(tokens)
    for (const t of tokens.keys()) check(prefill.subarray(t * vocab, (t + 1) * vocab), want[t]!)
    for (const next of DECODE) {
      const position = tokens.length
      tokens.push(next)
      const logits = stage.forward({
        tokens: Int32Array.of(next),
        slots: Int32Array.of(0),
        positions: Int32Array.of(position),
      }).logits!
      check(logits, reference.logits(tokens).at(-1)!)
    }
  } finally {
    stage.close()
  }
  return worst
}

export async function greedyTokens(
  pipeline: LocalPipeline,
  prompt: number[],
  n: number,
  prefillChunk = 512,
): Promise<number[]> {
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

/** Decoding token by token through the cache gives the logits of a full recompute over the whole sequence. */
export function checkCachedDecode(dir: string, tolerance: number): void {
  const cached = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
  const tokens = [...PROMPT, ...DECODE]
  cached.forward({
    tokens: Int32Array.from(PROMPT),
    slots: new Int32Array(PROMPT.length),
    positions: Int32Array.from(PROMPT.keys()),
  })
  let last!: Float32Array
  for (let t = PROMPT.length; t < tokens.length; t++)
    last = cached.forward({
      tokens: Int32Array.of(tokens[t]!),
      slots: Int32Array.of(0),
      positions: Int32Array.of(t),
    }).logits!
  const full = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
  const recomputed = full.forward({
    tokens: Int32Array.from(tokens),
    slots: new Int32Array(tokens.length),
    positions: Int32Array.from(tokens.keys()),
    logitRows: Int32Array.of(tokens.length - 1),
  }).logits!
  expect(maxAbsDiff(last, recomputed)).toBeLessThan(tolerance)
  cached.close()
  full.close()
}

/** Stages [0,2)+[2,3) and [0,1)+[1,2)+[2,3) chained equal the monolithic model, and give the same greedy tokens. */
export async function checkShardComposition(dir: string, tolerance: number): Promise<void> {
  const mono = ModelStage.load(dir, backend, { slots: 2, maxLen: 64 })
  const two = [
    ModelStage.load(dir, backend, { hi: 2, slots: 2, maxLen: 64 }),
    ModelStage.load(dir, backend, { lo: 2, slots: 2, maxLen: 64 }),
  ]
  const three = [0, 1, 2].map((i) => ModelStage.load(dir, backend, { lo: i, hi: i + 1, slots: 2, maxLen: 64 }))
  const step = {
    tokens: Int32Array.from(PROMPT),
    slots: new Int32Array(PROMPT.length),
    positions: Int32Array.from(PROMPT.keys()),
  }
  const want = await new LocalPipeline([mono]).step(step)
  for (const stages of [two, three])
    expect(maxAbsDiff(await new LocalPipeline(stages).step(step), want)).toBeLessThan(tolerance)
  const greedy = await greedyTokens(new LocalPipeline([mono]), PROMPT, 8)
  expect(await greedyTokens(new LocalPipeline(three), PROMPT, 8)).toEqual(greedy)
  for (const s of [mono, ...two, ...three]) s.close()
}

/** A batch of rows of 3 sequences at different positions equals each row decoded alone. */
export function checkBatching(dir: string, tolerance: number): void {
  const stage = ModelStage.load(dir, backend, { slots: 3, maxLen: 64 })
  const prompts = [PROMPT.slice(0, 3), PROMPT.slice(1, 9), PROMPT.slice(2, 7)]
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
    alone.forward({ tokens: Int32Array.from(p), slots: new Int32Array(p.length), positions: Int32Array.from(p.keys()) })
    const single = alone.forward({
      tokens: Int32Array.of(next[i]!),
      slots: Int32Array.of(0),
      positions: Int32Array.of(p.length),
    }).logits!
    expect(maxAbsDiff(batched.subarray(i * vocab, (i + 1) * vocab), single)).toBeLessThan(tolerance)
  })
  stage.close()
  alone.close()
}

/** The whole suite for one family over float and quantized synthetic checkpoints. */
export function runConformance(
  arch: SynthArch,
  extra: Partial<SynthSpec>,
  options: {
    dtypes?: readonly SynthDtype[]
    quantTolerance?: number
    quantTopThree?: boolean
    quantReference?: boolean
  } = {},
): void {
  const dtypes = options.dtypes ?? ['f32', 'bf16', 'q4']
  describe(`${arch} conformance`, () => {
    for (const dtype of dtypes) {
      const tolerance = dtype === 'f32' ? 1e-4 : 1e-3
      // a family may check its quantized experts against the reference on its own (see its test file)
      if (!(isQuantized(dtype) && options.quantReference === false))
        test(`${dtype}: prefill and decode steps match the float64 reference`, async () => {
          checkAgainstReference(
            await synthModel(arch, dtype, extra),
            isQuantized(dtype),
            options.quantTolerance,
            backend,
            options.quantTopThree,
          )
        }, 60_000)
      if (dtype === 'f32')
        test('f32 with the f16 KV cache the cpu backend serves with: within f16 rounding of the float64 reference', async () => {
          checkAgainstReference(await synthModel(arch, dtype, extra), false, undefined, backend, true, 'f16')
        }, 60_000)
      test(`${dtype}: cached decode equals a full recompute`, async () => {
        checkCachedDecode(await synthModel(arch, dtype, extra), tolerance)
      }, 60_000)
      test(`${dtype}: 2 and 3 stages chained equal the monolithic model`, async () => {
        await checkShardComposition(await synthModel(arch, dtype, extra), tolerance)
      }, 60_000)
      test(`${dtype}: a batch of rows equals each row alone`, async () => {
        checkBatching(await synthModel(arch, dtype, extra), tolerance)
      }, 60_000)
    }
  })
}
