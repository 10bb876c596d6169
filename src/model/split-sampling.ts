/** Sampling over a vocabulary split across tensor-parallel ranks. With lm_head split by vocabulary, rank r holds the
 * logits of ids [r·width, (r+1)·width). Rather than gather megabytes of logits on rank 0 every step, each rank reduces
 * its slice to what sampling needs — its best token (greedy rows), its candidates within the sampler's cutoff of its own
 * best (temperature rows), or the whole slice (rows that report log-probabilities) — and rank 0 merges the parts into
 * exactly the tokens sampleRows would draw from the joined logits: the same candidates in the same order, summed in the
 * same order. */
import { DbcError } from '../errors.ts'
import {
  argmax,
  collectCandidates,
  CUTOFF,
  drawCandidate,
  logprobsOf,
  penalized,
  reserveCandidates,
  sampleToken,
  type RowSampling,
  type SampledToken,
} from './sampler.ts'

/** What a rank sends for one row: u32 kind | u32 count n | the kind's words (f32 values, i32 ids; little-endian). */
const KIND = {
  /** greedy: [id, value] of the slice's first best (after the repetition penalty, the bias and the grammar's mask; −∞
   * when the mask allows none of the slice) */
  best: 1,
  /** temperature: ids[n] then values[n], the penalized (and biased) values at or above the slice's own best − CUTOFF·T */
  candidates: 2,
  /** temperature, when candidates would be no smaller: every penalized value of the slice */
  dense: 3,
  /** log-probabilities: every value of the slice, as the head computed it (no penalty, no bias) */
  raw: 4,
} as const

const HINT = 'run the same dbcluster release and model on every rank'
const fail = (message: string) => new DbcError('E_TP_PROTOCOL', message, HINT)

/** A summary's largest size for `rows` rows of a `width`-wide slice (what rank 0 accepts from a rank). */
export const summaryLimit = (rows: number, width: number) => rows * (2 + width) * 4

// one buffer for the summary a rank sends, grown as needed: a new one per step would be memory faulted in anew
let out = new Int32Array(0)

/** This rank's summary of `logits` ([rows.length, width], ids from `first`), one row per RowSampling. The result is a
 * view of a buffer the next call reuses: send it before summarizing again. */
export function summarizeSlice(
  logits: Float32Array,
  first: number,
  width: number,
  rows: readonly RowSampling[],
): Uint8Array {
  if (logits.length !== rows.length * width)
    throw new RangeError(`${logits.length / width} logit rows for ${rows.length} sampling rows`)
  if (out.length < rows.length * (2 + width)) out = new Int32Array(rows.length * (2 + width))
  const floats = new Float32Array(out.buffer)
  let at = 0
  rows.forEach((row, i) => {
    const slice = logits.subarray(i * width, (i + 1) * width)
    if (row.logprobs >= 0) {
      out[at] = KIND.raw
      out[at + 1] = width
      floats.set(slice, at + 2)
      at += 2 + width
      return
    }
    const values = penalized(slice, first, row.params, row.history, row.bias, row.allowed)
    const best = argmax(values)
    if (row.params.temperature === 0) {
      out[at] = KIND.best
      out[at + 1] = 1
      out[at + 2] = first + best
      floats[at + 3] = values[best]!
      at += 4
      return
    }
    // every value the merged floor can keep: the global best is at least this slice's, so its floor is no lower
    const floor = values[best]! - CUTOFF * row.params.temperature
    let n = 0
    for (let j = 0; j < width; j++) if (values[j]! >= floor) n++
    if (2 * n >= width) {
      out[at] = KIND.dense
      out[at + 1] = width
      floats.set(values, at + 2)
      at += 2 + width
      return
    }
    out[at] = KIND.candidates
    out[at + 1] = n
    let k = 0
    for (let j = 0; j < width; j++) {
      if (!(values[j]! >= floor)) continue
      out[at + 2 + k] = first + j
      floats[at + 2 + n + k] = values[j]!
      k++
    }
    at += 2 + 2 * n
  })
  return new Uint8Array(out.buffer, 0, at * 4)
}

/** One rank's part of one row, as read from its summary. */
interface RowPart {
  kind: number
  ids?: Int32Array
  values: Float32Array
}

/** Splits a rank's summary into its rows, checking every count and id against the rank's slice. */
function readSummary(
  bytes: Uint8Array,
  rank: number,
  first: number,
  width: number,
  rows: readonly RowSampling[],
): RowPart[] {
  if (bytes.byteLength % 4)
    throw fail(`rank ${rank} sent a sampling summary of ${bytes.byteLength} bytes, not whole words`)
  // a received frame may start anywhere in its buffer: copy to align the words
  const words =
    bytes.byteOffset % 4
      ? new Int32Array(bytes.slice().buffer)
      : new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
  const floats = new Float32Array(words.buffer, words.byteOffset, words.length)
  const parts: RowPart[] = []
  let at = 0
  for (const [i, row] of rows.entries()) {
    if (at + 2 > words.length) throw fail(`rank ${rank}'s sampling summary ends before row ${i}`)
    const kind = words[at]!
    const n = words[at + 1]!
    const expected =
      row.logprobs >= 0 ? [KIND.raw] : row.params.temperature === 0 ? [KIND.best] : [KIND.candidates, KIND.dense]
    if (!(expected as number[]).includes(kind))
      throw fail(`rank ${rank} summarized row ${i} as kind ${kind}, expected ${expected.join(' or ')}`)
    const size = kind === KIND.best ? 2 : kind === KIND.candidates ? 2 * n : n
    const countOk = kind === KIND.best ? n === 1 : kind === KIND.candidates ? n >= 0 && n <= width : n === width
    if (!countOk || at + 2 + size > words.length)
      throw fail(`rank ${rank} sent ${n} values for row ${i} of a ${width}-wide slice`)
    const body = at + 2
    at = body + size
    if (kind === KIND.best || kind === KIND.candidates) {
      const count = kind === KIND.best ? 1 : n
      const ids = words.subarray(body, body + count)
      let previous = first - 1
      for (const id of ids) {
        if (id < first || id >= first + width || id <= previous)
          throw fail(
            `rank ${rank} sent token id ${id} for row ${i}, outside its slice ${first}..${first + width - 1} or out of order`,
          )
        previous = id
      }
      parts.push({ kind, ids, values: floats.subarray(body + count, body + 2 * count) })
    } else parts.push({ kind, values: floats.subarray(body, body + n) })
  }
  if (at !== words.length)
    throw fail(`rank ${rank}'s sampling summary has ${words.length - at} words past its ${rows.length} rows`)
  return parts
}

// the joined row of a log-probabilities request, reused
let joined = new Float32Array(0)

/** Rank 0: the tokens from every rank's summary (index = rank), each `width` ids wide. */
export function mergeSlices(
  summaries: readonly Uint8Array[],
  width: number,
  rows: readonly RowSampling[],
): SampledToken[] {
  const byRank = summaries.map((bytes, rank) => readSummary(bytes, rank, rank * width, width, rows))
  const vocab = width * summaries.length
  return rows.map((row, i) => {
    const parts = byRank.map((p) => p[i]!)
    if (row.logprobs >= 0) {
      if (joined.length < vocab) joined = new Float32Array(vocab)
      const logits = joined.subarray(0, vocab)
      parts.forEach((p, rank) => logits.set(p.values, rank * width))
      const id = sampleToken(logits, row.params, row.history, row.u, row.bias, row.allowed)
      return { id, ...logprobsOf(logits, id, row.logprobs) }
    }
    if (row.params.temperature === 0) {
      // the first best over the ranks in order, as argmax over the joined row finds it
      let best = 0
      for (let r = 1; r < parts.length; r++) if (parts[r]!.values[0]! > parts[best]!.values[0]!) best = r
      return { id: parts[best]!.ids![0]! }
    }
    let max = -Infinity
    for (const p of parts) for (const v of p.values) if (v > max) max = v
    reserveCandidates(vocab)
    const floor = max - CUTOFF * row.params.temperature
    let n = 0
    parts.forEach((p, rank) => (n = collectCandidates(p.values, rank * width, floor, n, p.ids)))
    return { id: drawCandidate(n, max, row.params, row.u) }
  })
}
