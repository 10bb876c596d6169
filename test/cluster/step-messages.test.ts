/** The ring's step protocol: every field survives a round trip (with and without per-row sampling), and malformed
 * messages are refused with a RangeError rather than misread. */
import { describe, expect, test } from 'bun:test'
import {
  decodeResult,
  decodeStep,
  encodeResult,
  encodeStep,
  type StepMessage,
} from '../../src/cluster/step-messages.ts'
import { rowSampling, samplingParams, sampleRows } from '../../src/model/sampler.ts'

const base: StepMessage = {
  stepId: 7,
  slots: Int32Array.of(0, 0, 3),
  positions: Int32Array.of(4, 5, 9),
  logitRows: Int32Array.of(1, 2),
  closeSlots: Int32Array.of(5),
  openSlots: Int32Array.of(3),
  stageMicros: Int32Array.of(120),
  hiddenSize: 4,
  hidden: Float32Array.from({ length: 12 }, (_, i) => i / 3),
}

describe('step messages', () => {
  test('a step without sampling asks for logits; with sampling every row parameter survives', () => {
    const plain = decodeStep(encodeStep(base))
    expect(plain.sampling).toBeUndefined()
    expect([...plain.hidden!]).toEqual([...base.hidden!])
    expect([...plain.openSlots]).toEqual([3])
    const sampling = [
      rowSampling(
        samplingParams({ temperature: 0.7, topP: 0.9, topK: 40, minP: 0.05, repetitionPenalty: 1.1 }),
        [1, 2, 3, 2],
        0.123456789,
        2,
      ),
      rowSampling(samplingParams(), [9], 0),
    ]
    const round = decodeStep(encodeStep({ ...base, sampling }))
    expect(round.sampling).toEqual(sampling)
    // no penalty: the history is not sent at all
    expect(round.sampling![1]!.history.length).toBe(0)
    // sampling present but no row needs a token (a middle prefill chunk) is not the same as "return logits"
    const empty = decodeStep(encodeStep({ ...base, logitRows: new Int32Array(0), sampling: [] }))
    expect(empty.sampling).toEqual([])
  })

  test('token results carry ids and log-probabilities; logits results carry the matrix', () => {
    const vocab = 5
    const logits = Float32Array.of(0, 3, 1, 2, -1, 4, 0, 0, 0, 1)
    const tokens = sampleRows(logits, vocab, [
      rowSampling(samplingParams(), [], 0, 2),
      rowSampling(samplingParams(), [], 0),
    ])
    expect(tokens.map((t) => t.id)).toEqual([1, 0])
    const back = decodeResult(encodeResult({ stepId: 3, stageMicros: Int32Array.of(5, 6), tokens }))
    expect(back).toEqual({ stepId: 3, stageMicros: Int32Array.of(5, 6), tokens })
    expect(back.tokens![0]!.topLogprobs!.map((t) => t.id)).toEqual([1, 3])
    const l = decodeResult(encodeResult({ stepId: 4, stageMicros: Int32Array.of(1), logits, vocab }))
    expect([...l.logits!]).toEqual([...logits])
  })

  test('truncated, mismatched and out-of-range messages are refused', () => {
    const bytes = encodeStep({
      ...base,
      sampling: [rowSampling(samplingParams(), [], 0), rowSampling(samplingParams(), [], 0)],
    })
    expect(() => decodeStep(bytes.subarray(0, bytes.length - 3))).toThrow(RangeError)
    expect(() => decodeStep(encodeStep({ ...base, sampling: [rowSampling(samplingParams(), [], 0)] }))).toThrow(
      /sampling rows differ/,
    )
    const bad = encodeStep({
      ...base,
      sampling: [rowSampling(samplingParams(), [], 0), rowSampling(samplingParams(), [], 0)],
    })
    // the first row's temperature (the f64 right after the sampling count) set to -1
    const at = 4 + (4 + 12) + (4 + 12) + (4 + 8) + 4 // stepId, slots, positions, logitRows, sampling count
    new DataView(bad.buffer).setFloat64(at, -1, true)
    expect(() => decodeStep(bad)).toThrow(/out of range/)
    const result = encodeResult({ stepId: 1, stageMicros: Int32Array.of(1), tokens: [{ id: 1 }] })
    expect(() => decodeResult(result.subarray(0, result.length - 2))).toThrow(RangeError)
  })
})
