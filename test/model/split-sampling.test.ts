import { describe, expect, test } from 'bun:test'
import { DbcError } from '../../src/errors.ts'
import { rowSampling, sampleRows, samplingParams, seededRandom, type RowSampling } from '../../src/model/sampler.ts'
import { mergeSlices, summarizeSlice, summaryLimit } from '../../src/model/split-sampling.ts'

const VOCAB = 1200

/** Rank r's slice of every row of `logits` ([rows, VOCAB]), as its split head would compute it. */
function sliceOf(logits: Float32Array, rows: number, ranks: number, r: number): Float32Array {
  const width = VOCAB / ranks
  const out = new Float32Array(rows * width)
  for (let i = 0; i < rows; i++) out.set(logits.subarray(i * VOCAB + r * width, i * VOCAB + (r + 1) * width), i * width)
  return out
}

/** Every rank's summary (copied: summarizeSlice reuses its buffer), merged as rank 0 merges them. */
function splitSample(logits: Float32Array, rows: RowSampling[], ranks: number) {
  const width = VOCAB / ranks
  const summaries = Array.from({ length: ranks }, (_, r) =>
    summarizeSlice(sliceOf(logits, rows.length, ranks, r), r * width, width, rows).slice(),
  )
  return { tokens: mergeSlices(summaries, width, rows), summaries }
}

function randomLogits(rows: number, seed: number, scale: number): Float32Array {
  const random = seededRandom(seed)
  return Float32Array.from({ length: rows * VOCAB }, () => (random() - 0.5) * scale)
}

const uniform = seededRandom(99)
const row = (params: Parameters<typeof samplingParams>[0], history: number[] = [], logprobs = -1) =>
  rowSampling(samplingParams(params), history, uniform(), logprobs)

describe('split sampling: summaries of vocabulary slices merged on rank 0 = sampling the joined logits', () => {
  const cases: [string, () => RowSampling[], number][] = [
    ['greedy', () => [row({}), row({}), row({})], 8],
    [
      'greedy with a repetition penalty on ids in every slice',
      () => [
        row({ repetitionPenalty: 1.8 }, [5, 400, 401, 799, 1100, 1199]),
        row({ repetitionPenalty: 0.5 }, [3, 700]),
      ],
      8,
    ],
    [
      'temperature, every token a candidate (dense slices)',
      () => [
        row({ temperature: 0.7 }),
        row({ temperature: 1.3, repetitionPenalty: 1.2 }, [10, 900]),
        row({ temperature: 2 }),
      ],
      8,
    ],
    [
      'temperature with top-k, top-p and min-p',
      () => [
        row({ temperature: 1, topK: 20, topP: 0.9 }),
        row({ temperature: 0.8, minP: 0.05 }),
        row({ temperature: 1, topP: 0.5, topK: 3 }),
      ],
      8,
    ],
    [
      'a low temperature over spread logits: few candidates per slice',
      () => [
        row({ temperature: 0.1 }),
        row({ temperature: 0.05, topP: 0.95 }),
        row({ temperature: 0.2, repetitionPenalty: 1.5 }, [1, 2, 3, 601]),
      ],
      400,
    ],
    [
      'log-probabilities (whole slices)',
      () => [
        row({}, [], 0),
        row({ temperature: 0.9 }, [], 5),
        row({ temperature: 1, repetitionPenalty: 1.3 }, [7, 1000], 3),
      ],
      8,
    ],
    [
      'a mix in one step',
      () => [row({}), row({ temperature: 0.1 }), row({}, [], 2), row({ temperature: 1, topK: 5 })],
      400,
    ],
  ]
  for (const [name, rows, scale] of cases) {
    for (const ranks of [2, 3, 4]) {
      test(`${name}, ${ranks} ranks`, () => {
        for (let trial = 0; trial < 4; trial++) {
          const sampling = rows()
          const logits = randomLogits(sampling.length, 1000 * ranks + 10 * trial + scale, scale)
          expect(splitSample(logits, sampling, ranks).tokens).toEqual(sampleRows(logits, VOCAB, sampling))
        }
      })
    }
  }

  test('a greedy row costs 16 bytes per rank; few candidates cost far less than the slice', () => {
    const greedy = splitSample(randomLogits(3, 1, 8), [row({}), row({}), row({})], 2)
    expect(greedy.summaries.map((s) => s.byteLength)).toEqual([48, 48])
    const sparse = splitSample(randomLogits(1, 2, 400), [row({ temperature: 0.1 })], 2)
    for (const s of sparse.summaries) expect(s.byteLength).toBeLessThan(VOCAB)
    const dense = splitSample(randomLogits(1, 3, 8), [row({ temperature: 1 })], 2)
    for (const s of dense.summaries) expect(s.byteLength).toBe((2 + VOCAB / 2) * 4)
    expect(summaryLimit(1, VOCAB / 2)).toBe((2 + VOCAB / 2) * 4)
  })

  test('ties across slices go to the lowest id, as argmax over the joined row', () => {
    const logits = new Float32Array(VOCAB).fill(-1)
    logits[1100] = 5
    logits[650] = 5
    logits[900] = 5
    for (const ranks of [2, 3, 4]) expect(splitSample(logits, [row({})], ranks).tokens).toEqual([{ id: 650 }])
  })
})

describe('split sampling: a malformed summary is refused with the reason', () => {
  const rows = [row({}), row({ temperature: 0.1 })]
  const logits = randomLogits(2, 7, 400)
  const width = VOCAB / 2
  const good = () => [0, 1].map((r) => summarizeSlice(sliceOf(logits, 2, 2, r), r * width, width, rows).slice())
  const refused = (summaries: Uint8Array[], message: RegExp) => {
    let error: unknown
    try {
      mergeSlices(summaries, width, rows)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(DbcError)
    expect((error as DbcError).code).toBe('E_TP_PROTOCOL')
    expect((error as DbcError).message).toMatch(message)
  }
  const words = (bytes: Uint8Array) => new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)

  test('the well-formed summaries merge', () => {
    expect(mergeSlices(good(), width, rows)).toEqual(sampleRows(logits, VOCAB, rows))
  })
  test('truncated, or not whole words', () => {
    const [a, b] = good() as [Uint8Array, Uint8Array]
    refused([a, b.subarray(0, 16)], /rank 1's sampling summary ends before row 1/)
    refused([a, b.subarray(0, 8)], /rank 1 sent 1 values for row 0/)
    refused([a, b.subarray(0, b.byteLength - 4)], /rank 1 sent \d+ values for row 1/)
    refused([a, b.subarray(0, 6)], /not whole words/)
  })
  test('trailing words', () => {
    const [a, b] = good() as [Uint8Array, Uint8Array]
    const longer = new Uint8Array(b.byteLength + 4)
    longer.set(b)
    refused([a, longer], /1 words past its 2 rows/)
  })
  test('the wrong kind for a row', () => {
    const [a, b] = good() as [Uint8Array, Uint8Array]
    words(b)[0] = 4
    refused([a, b], /rank 1 summarized row 0 as kind 4, expected 1/)
  })
  test('a token id outside the rank’s slice', () => {
    const [a, b] = good() as [Uint8Array, Uint8Array]
    words(b)[2] = 3 // rank 1 holds 600..1199
    refused([a, b], /rank 1 sent token id 3 for row 0, outside its slice 600..1199/)
  })
  test('a count that does not fit the slice', () => {
    const [a, b] = good() as [Uint8Array, Uint8Array]
    words(b)[1] = 2
    refused([a, b], /rank 1 sent 2 values for row 0/)
  })
})
