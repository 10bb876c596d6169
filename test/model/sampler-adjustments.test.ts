/** OpenAI's logit_bias, presence_penalty and frequency_penalty: the formula against hand computations and an independent
 * loop, their effect on sampling, and the same tokens where the logits are split (tensor parallel) or across the wire. */
import { describe, expect, test } from 'bun:test'
import { decodeStep, encodeStep } from '../../src/cluster/step-messages.ts'
import {
  logitBiasFor,
  makeSampler,
  penalized,
  rowSampling,
  sampleRows,
  sampleToken,
  samplingParams,
  seededRandom,
  type LogitAdjustments,
  type RowSampling,
} from '../../src/model/sampler.ts'
import { mergeSlices, summarizeSlice } from '../../src/model/split-sampling.ts'

const adjust = (bias: Record<number, number>, presencePenalty = 0, frequencyPenalty = 0): LogitAdjustments => ({
  logitBias: new Map(Object.entries(bias).map(([k, v]) => [Number(k), v])),
  presencePenalty,
  frequencyPenalty,
})

/** Independent reference: OpenAI's published formula, one token at a time, in float64 then rounded to float32. */
function reference(logits: number[], generated: number[], a: LogitAdjustments): number[] {
  return logits.map((logit, t) => {
    const count = generated.filter((g) => g === t).length
    const value =
      logit + (a.logitBias.get(t) ?? 0) - (count * a.frequencyPenalty + (count > 0 ? 1 : 0) * a.presencePenalty)
    return Math.fround(value)
  })
}

const countsOf = (tokens: number[]) => {
  const counts = new Map<number, number>()
  for (const t of tokens) counts.set(t, (counts.get(t) ?? 0) + 1)
  return counts
}

describe('logit bias and presence/frequency penalties', () => {
  test('the formula, by hand: bias − (frequency·count + presence·[count > 0]), over generated tokens only', () => {
    // token 2 generated 3 times, token 4 once; bias on 2 and 7
    const bias = logitBiasFor(adjust({ 2: 5, 7: -1 }, 0.5, 0.25), countsOf([2, 4, 2, 2]))!
    expect([...bias.ids]).toEqual([2, 4, 7])
    // 2: 5 − (0.25·3 + 0.5) = 3.75;  4: −(0.25·1 + 0.5) = −0.75;  7: −1
    expect([...bias.values]).toEqual([3.75, -0.75, -1])
    const row = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8])
    const out = penalized(row, 0, samplingParams(), [], bias)
    expect([...out]).toEqual([1, 2, 6.75, 4, 4.25, 6, 7, 7])
    expect([...row]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]) // the logits themselves are untouched
    // negative penalties encourage repetition: 2 gets + (0.5·3 + 1) = +2.5
    const encourage = logitBiasFor(adjust({}, -1, -0.5), countsOf([2, 2, 2]))!
    expect([...encourage.ids]).toEqual([2])
    expect([...encourage.values]).toEqual([2.5])
  })

  test('nothing to apply gives no bias at all (the wire carries none)', () => {
    expect(logitBiasFor(undefined, countsOf([1, 2]))).toBeUndefined()
    expect(logitBiasFor(adjust({}, 0, 0), countsOf([1, 2]))).toBeUndefined()
    expect(logitBiasFor(adjust({}, 1, 1), new Map())).toBeUndefined()
    expect(rowSampling(samplingParams(), [1, 2], 0)).not.toHaveProperty('bias')
  })

  test('matches an independent loop over random logits and histories', () => {
    const random = seededRandom(7)
    for (let trial = 0; trial < 50; trial++) {
      const vocab = 40
      const logits = Array.from({ length: vocab }, () => Math.fround((random() - 0.5) * 20))
      const generated = Array.from({ length: Math.floor(random() * 30) }, () => Math.floor(random() * vocab))
      const bias: Record<number, number> = {}
      for (let k = 0; k < 5; k++) bias[Math.floor(random() * vocab)] = Math.round((random() - 0.5) * 200)
      const a = adjust(bias, (random() - 0.5) * 4, (random() - 0.5) * 4)
      const got = penalized(Float32Array.from(logits), 0, samplingParams(), [], logitBiasFor(a, countsOf(generated)))
      expect([...got]).toEqual(reference(logits, generated, a))
    }
  })

  test('applied after the repetition penalty, which divides positive and multiplies negative logits', () => {
    const row = Float32Array.from([4, -2, 1])
    const bias = logitBiasFor(adjust({ 0: 1, 1: 1 }), new Map())
    // repetition penalty 2 on tokens 0 and 1 (recent), then +1: 4/2 + 1 = 3, −2·2 + 1 = −3
    expect([...penalized(row, 0, samplingParams({ repetitionPenalty: 2 }), [0, 1], bias)]).toEqual([3, -3, 1])
  })

  test('+100 forces a token under greedy; −100 bans the greedy token', () => {
    const logits = Float32Array.from([1, 9, 3, -4, 2])
    const force = logitBiasFor(adjust({ 3: 100 }), new Map())
    expect(sampleToken(logits, samplingParams(), [], 0, force)).toBe(3)
    const ban = logitBiasFor(adjust({ 1: -100 }), new Map())
    expect(sampleToken(logits, samplingParams(), [], 0, ban)).toBe(2)
    // and under temperature: a forced token is all but certain
    const random = seededRandom(1)
    for (let i = 0; i < 200; i++)
      expect(sampleToken(logits, samplingParams({ temperature: 1 }), [], random(), force)).toBe(3)
  })

  test('a bias b multiplies a token’s odds by e^(b/T)', () => {
    // tokens 0 and 1 equal; +ln 3 on token 1 at T = 1 → 3:1 (±0.03 at 8000 draws)
    const logits = Float32Array.from([0, 0, -50])
    const bias = logitBiasFor(adjust({ 1: Math.log(3) }), new Map())
    const random = seededRandom(5)
    let ones = 0
    for (let i = 0; i < 8000; i++) ones += sampleToken(logits, samplingParams({ temperature: 1 }), [], random(), bias)
    expect(ones / 8000).toBeGreaterThan(0.72)
    expect(ones / 8000).toBeLessThan(0.78)
  })

  test('a frequency penalty stops a repetition that a bias starts', () => {
    // the greedy loop of one choice: a bias of +3 makes token 2 win until its count costs more than 3 + its margin
    const logits = Float32Array.from([0, 1, 0, 0.5])
    const a = adjust({ 2: 3 }, 0, 1)
    const generated: number[] = []
    const greedy = makeSampler(samplingParams())
    for (let i = 0; i < 6; i++) {
      const bias = logitBiasFor(a, countsOf(generated))
      generated.push(sampleToken(logits, samplingParams(), [], 0, bias))
    }
    // token 2 scores 3 − count: after two it ties token 1 and loses on the id; each pick then costs its token 1
    expect(generated).toEqual([2, 2, 1, 2, 3, 0])
    expect(greedy(logits, [])).toBe(1)
  })
})

describe('with a split vocabulary and over the wire', () => {
  const VOCAB = 600
  const random = seededRandom(3)
  const logits = Float32Array.from({ length: 3 * VOCAB }, () => (random() - 0.5) * 8)
  const bias = logitBiasFor(adjust({ 5: 100, 450: -100, 599: 2.5, 300: 1 }, 0.4, 0.7), countsOf([7, 7, 310, 590]))
  const rows: RowSampling[] = [
    rowSampling(samplingParams(), [], 0, -1, bias),
    rowSampling(samplingParams({ temperature: 0.9, topK: 20 }), [], random(), -1, bias),
    rowSampling(samplingParams({ temperature: 1.1 }), [], random(), 3, bias),
  ]

  test('split sampling merges to the joined logits’ tokens, the bias on ids in every slice', () => {
    for (const ranks of [2, 3]) {
      const width = VOCAB / ranks
      const summaries = Array.from({ length: ranks }, (_, r) => {
        const slice = new Float32Array(rows.length * width)
        for (let i = 0; i < rows.length; i++)
          slice.set(logits.subarray(i * VOCAB + r * width, i * VOCAB + (r + 1) * width), i * width)
        return summarizeSlice(slice, r * width, width, rows).slice()
      })
      expect(mergeSlices(summaries, width, rows)).toEqual(sampleRows(logits, VOCAB, rows))
    }
    // the forced token wins the greedy row
    expect(sampleRows(logits, VOCAB, rows)[0]!.id).toBe(5)
  })

  test('the step message carries the bias; the last stage samples the same tokens', () => {
    const step = decodeStep(
      encodeStep({
        stepId: 1,
        slots: Int32Array.of(0, 1, 2),
        positions: Int32Array.of(3, 3, 3),
        logitRows: Int32Array.of(0, 1, 2),
        sampling: rows,
        closeSlots: new Int32Array(0),
        openSlots: new Int32Array(0),
        stageMicros: new Int32Array(0),
        tokens: Int32Array.of(1, 2, 3),
        hiddenSize: 0,
      }),
    )
    expect(step.sampling).toEqual(rows)
    expect(sampleRows(logits, VOCAB, step.sampling!)).toEqual(sampleRows(logits, VOCAB, rows))
  })
})
