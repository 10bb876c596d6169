/** The per-step control protocol of the pipeline ring (docs/cluster.md): the head decides each step's composition — rows
 * (slot, position), which rows need logits, which KV slots open and close — and it travels with the activations in one
 * sealed `step` frame, so every stage stays in lockstep without a separate control round. The last stage answers with a
 * `activation` frame carrying the step id and either the sampled tokens (when the step carries per-row sampling: the
 * usual case, a few bytes per row) or the logits of the requested rows (parity checks). Binary, little-endian, never JSON. */
import { decodeTensor, encodeTensor } from '../link/frames.ts'
import type { AllowedMask, RowSampling, SampledToken } from '../model/sampler.ts'
import { Reader, Writer } from './binary-codec.ts'

export interface StepMessage {
  stepId: number
  slots: Int32Array
  positions: Int32Array
  logitRows: Int32Array
  /** One per logit row: sample on the last stage and return tokens; absent: return logits. */
  sampling?: RowSampling[]
  /** KV slots to free, then to claim, on every stage before this step runs. */
  closeSlots: Int32Array
  openSlots: Int32Array
  /** Microseconds each stage so far spent computing this step (rank order; each stage appends its own). */
  stageMicros: Int32Array
  /** Token ids (to the stage holding the embedding) or hidden states [rows, hidden] (to later stages). */
  tokens?: Int32Array
  hidden?: Float32Array
  hiddenSize: number
}

export type StepResult = { stepId: number; stageMicros: Int32Array } &
  /** logits [logitRows, vocab] */
  ({ logits: Float32Array; vocab: number; tokens?: undefined } | { tokens: SampledToken[]; logits?: undefined })

export function encodeStep(m: StepMessage): Uint8Array {
  const w = new Writer()
  w.u32(m.stepId)
  w.ints(m.slots)
  w.ints(m.positions)
  w.ints(m.logitRows)
  writeSampling(w, m.sampling)
  w.ints(m.closeSlots)
  w.ints(m.openSlots)
  w.ints(m.stageMicros)
  w.u32(m.hiddenSize)
  if (m.tokens)
    w.bytes(
      encodeTensor('i32', [m.tokens.length], new Uint8Array(m.tokens.buffer, m.tokens.byteOffset, m.tokens.byteLength)),
    )
  else
    w.bytes(
      encodeTensor(
        'f32',
        [m.slots.length, m.hiddenSize],
        new Uint8Array(m.hidden!.buffer, m.hidden!.byteOffset, m.hidden!.byteLength),
      ),
    )
  return w.join()
}

export function decodeStep(bytes: Uint8Array): StepMessage {
  const r = new Reader(bytes)
  const stepId = r.u32()
  const slots = r.ints()
  const positions = r.ints()
  const logitRows = r.ints()
  const sampling = readSampling(r)
  if (sampling && sampling.length !== logitRows.length)
    throw new RangeError('step message: sampling rows differ from logit rows')
  const closeSlots = r.ints()
  const openSlots = r.ints()
  const stageMicros = r.ints()
  const hiddenSize = r.u32()
  const tensor = decodeTensor(r.bytesField())
  if (positions.length !== slots.length) throw new RangeError('step message: slots and positions differ in length')
  const copy = tensor.data.slice()
  const common = { stepId, slots, positions, logitRows, sampling, closeSlots, openSlots, stageMicros, hiddenSize }
  if (tensor.dtype === 'i32') {
    if (tensor.shape[0] !== slots.length) throw new RangeError('step message: token count differs from rows')
    return { ...common, tokens: new Int32Array(copy.buffer) }
  }
  if (tensor.dtype !== 'f32' || tensor.shape[0] !== slots.length || tensor.shape[1] !== hiddenSize)
    throw new RangeError('step message: hidden states have the wrong shape')
  return { ...common, hidden: new Float32Array(copy.buffer) }
}

// sampling block: u32 count + 1 (0 = no sampling: return logits; 1 = sample, but no row needs a token) | per row: f64 temperature, top_p, min_p, repetition penalty, u | u32 top_k,
// repetition context | i32 logprobs | ints history | ints bias ids (ascending) | f64 bias value per id | the grammar's
// allowed tokens: u32 0 (unconstrained), or 1 + ints bitmask words, or 2 + ints allowed ids (ascending; when shorter)
export function writeSampling(w: Writer, rows: readonly RowSampling[] | undefined): void {
  w.u32(rows ? rows.length + 1 : 0)
  for (const r of rows ?? []) {
    const p = r.params
    for (const v of [p.temperature, p.topP, p.minP, p.repetitionPenalty, r.u]) w.f64(v)
    w.u32(p.topK)
    w.u32(p.repetitionContext)
    w.u32(r.logprobs >>> 0)
    w.ints(r.history)
    w.ints(r.bias?.ids ?? new Int32Array(0))
    for (const v of r.bias?.values ?? []) w.f64(v)
    writeAllowed(w, r.allowed)
  }
}

const MASK = { none: 0, bits: 1, ids: 2 } as const
/** The most words a mask may have: ids up to 2^24, past any vocabulary. */
const MAX_MASK_WORDS = 1 << 19

function writeAllowed(w: Writer, allowed: AllowedMask | undefined): void {
  if (!allowed) return w.u32(MASK.none)
  let n = 0
  for (const word of allowed) {
    let v = word
    while (v) ((v &= v - 1), n++)
    if (n >= allowed.length) break
  }
  if (n >= allowed.length) {
    w.u32(MASK.bits)
    w.ints(new Int32Array(allowed.buffer, allowed.byteOffset, allowed.length))
    return
  }
  // a grammar often allows a handful of tokens (a quote, a digit, a stop token): their ids are far fewer words
  const ids = new Int32Array(n)
  let k = 0
  allowed.forEach((word, i) => {
    for (let b = 0; b < 32; b++) if ((word >>> b) & 1) ids[k++] = i * 32 + b
  })
  w.u32(MASK.ids)
  w.ints(ids)
}

function readAllowed(r: Reader): AllowedMask | undefined {
  const kind = r.u32()
  if (kind === MASK.none) return undefined
  const values = r.ints()
  if (kind === MASK.bits) {
    if (values.length > MAX_MASK_WORDS) throw new RangeError('step message: token mask too large')
    return new Uint32Array(values.buffer, values.byteOffset, values.length)
  }
  if (kind !== MASK.ids) throw new RangeError(`step message: unknown token mask kind ${kind}`)
  if (values.some((id, k) => id < 0 || id >= MAX_MASK_WORDS * 32 || (k > 0 && id <= values[k - 1]!)))
    throw new RangeError('step message: allowed token ids out of order or out of range')
  const mask = new Uint32Array(values.length ? (values[values.length - 1]! >> 5) + 1 : 0)
  for (const id of values) mask[id >> 5] = mask[id >> 5]! | (1 << (id & 31))
  return mask
}

export function readSampling(r: Reader): RowSampling[] | undefined {
  const count = r.u32()
  if (count === 0) return undefined
  const n = count - 1
  if (n > 1 << 16) throw new RangeError('step message: too many sampling rows')
  const rows: RowSampling[] = []
  for (let i = 0; i < n; i++) {
    const [temperature, topP, minP, repetitionPenalty, u] = [r.f64(), r.f64(), r.f64(), r.f64(), r.f64()] as [
      number,
      number,
      number,
      number,
      number,
    ]
    const topK = r.u32()
    const repetitionContext = r.u32()
    const logprobs = r.i32()
    const history = r.ints()
    const biasIds = r.ints()
    const biasValues = Float64Array.from(biasIds, () => r.f64())
    const allowed = readAllowed(r)
    if (
      biasIds.some((id, k) => id < 0 || (k > 0 && id <= biasIds[k - 1]!)) ||
      !biasValues.every((v) => Number.isFinite(v))
    )
      throw new RangeError('step message: logit bias ids out of order or values not finite')
    if (
      !(temperature >= 0) ||
      !(topP > 0 && topP <= 1) ||
      !(minP >= 0 && minP < 1) ||
      !(repetitionPenalty > 0) ||
      !(u >= 0 && u < 1) ||
      logprobs < -1 ||
      logprobs > 100
    ) {
      throw new RangeError('step message: sampling parameters out of range')
    }
    const bias = biasIds.length ? { bias: { ids: biasIds, values: biasValues } } : {}
    rows.push({
      params: { temperature, topP, topK, minP, repetitionPenalty, repetitionContext },
      u,
      history,
      ...bias,
      ...(allowed ? { allowed } : {}),
      logprobs,
    })
  }
  return rows
}

const RESULT_LOGITS = 0
const RESULT_TOKENS = 1

export function encodeResult(r: StepResult): Uint8Array {
  const w = new Writer()
  w.u32(r.stepId)
  w.ints(r.stageMicros)
  if (r.tokens) {
    // u32 count | per row: u32 id | f64 logprob (NaN: none) | u32 top count | (u32 id, f64 logprob) × top
    w.u32(RESULT_TOKENS)
    w.u32(r.tokens.length)
    for (const t of r.tokens) {
      w.u32(t.id)
      w.f64(t.logprob ?? Number.NaN)
      w.u32(t.topLogprobs?.length ?? 0)
      for (const top of t.topLogprobs ?? []) (w.u32(top.id), w.f64(top.logprob))
    }
    return w.join()
  }
  w.u32(RESULT_LOGITS)
  w.bytes(
    encodeTensor(
      'f32',
      [r.logits.length / r.vocab, r.vocab],
      new Uint8Array(r.logits.buffer, r.logits.byteOffset, r.logits.byteLength),
    ),
  )
  return w.join()
}

export function decodeResult(bytes: Uint8Array): StepResult {
  const r = new Reader(bytes)
  const stepId = r.u32()
  const stageMicros = r.ints()
  const kind = r.u32()
  if (kind === RESULT_TOKENS) {
    const n = r.u32()
    if (n > 1 << 16) throw new RangeError('step result: too many rows')
    const tokens: SampledToken[] = []
    for (let i = 0; i < n; i++) {
      const id = r.u32()
      const logprob = r.f64()
      const top = r.u32()
      if (top > 100) throw new RangeError('step result: too many top log-probabilities')
      const token: SampledToken = { id }
      if (!Number.isNaN(logprob)) token.logprob = logprob
      if (top > 0) token.topLogprobs = Array.from({ length: top }, () => ({ id: r.u32(), logprob: r.f64() }))
      tokens.push(token)
    }
    return { stepId, stageMicros, tokens }
  }
  if (kind !== RESULT_LOGITS) throw new RangeError(`step result: unknown kind ${kind}`)
  const t = decodeTensor(r.bytesField())
  if (t.dtype !== 'f32' || t.shape.length !== 2) throw new RangeError('step result: logits must be f32 [rows, vocab]')
  return { stepId, stageMicros, logits: new Float32Array(t.data.slice().buffer), vocab: t.shape[1]! }
}
