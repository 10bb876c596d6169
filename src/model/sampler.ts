/** Sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, OpenAI's logit bias and presence and
 * frequency penalties, and a grammar's mask of allowed tokens, with a seeded PRNG (same seed → same output).
 * makeSampler(params) returns a plain function from logits to a token id (mlx-lm sample_utils style). */
import { DbcError } from '../errors.ts'
import { maskedRows } from './masked-rows.ts'

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number
  topP: number
  topK: number
  minP: number
  repetitionPenalty: number
  /** How many recent tokens the repetition penalty looks at. */
  repetitionContext: number
  seed?: number
}

/** OpenAI's additive logit adjustments for one request (mlx-lm groups them apart as LogitsProcessorArguments). */
export interface LogitAdjustments {
  /** token id → value added to its logit, in [−100, 100] */
  logitBias: ReadonlyMap<number, number>
  /** [−2, 2]: subtracted once from every token generated so far */
  presencePenalty: number
  /** [−2, 2]: subtracted per occurrence of a token generated so far */
  frequencyPenalty: number
}

/** Values added to some logits, ids ascending: one row's adjustments resolved where the generated tokens are known (the
 * head), so the stage holding the logits needs no counts. */
export interface LogitBias {
  ids: Int32Array
  values: Float64Array
}

/** OpenAI's formula for one row: logit[t] += logit_bias[t] − (frequency_penalty·count(t) + presence_penalty·[count(t) > 0]),
 * counts over the tokens this choice generated so far (not the prompt). Undefined when nothing changes. */
export function logitBiasFor(
  adjustments: LogitAdjustments | undefined,
  counts: ReadonlyMap<number, number>,
): LogitBias | undefined {
  if (!adjustments) return undefined
  const terms = new Map(adjustments.logitBias)
  const { frequencyPenalty, presencePenalty } = adjustments
  if (frequencyPenalty !== 0 || presencePenalty !== 0)
    for (const [id, count] of counts)
      if (count > 0) terms.set(id, (terms.get(id) ?? 0) - (frequencyPenalty * count + presencePenalty))
  if (terms.size === 0) return undefined
  const ids = Int32Array.from(terms.keys()).sort()
  return { ids, values: Float64Array.from(ids, (id) => terms.get(id)!) }
}

export const GREEDY: SamplingParams = {
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  repetitionPenalty: 1,
  repetitionContext: 64,
}

export function samplingParams(partial: Partial<SamplingParams> = {}): SamplingParams {
  const p = { ...GREEDY, ...partial }
  if (!(p.temperature >= 0)) throw new RangeError('temperature must be >= 0')
  if (!(p.topP > 0 && p.topP <= 1)) throw new RangeError('top_p must be in (0, 1]')
  if (!(Number.isInteger(p.topK) && p.topK >= 0)) throw new RangeError('top_k must be a non-negative integer')
  if (!(p.minP >= 0 && p.minP < 1)) throw new RangeError('min_p must be in [0, 1)')
  if (!(p.repetitionPenalty > 0)) throw new RangeError('repetition_penalty must be > 0')
  return p
}

/** xoshiro128** seeded through splitmix32: small, fast, reproducible across platforms. */
export function seededRandom(seed: number): () => number {
  let x = seed >>> 0
  const split = () => {
    x = (x + 0x9e3779b9) >>> 0
    let z = x
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
  const s = [split(), split(), split(), split()]
  return () => {
    const result = Math.imul(((Math.imul(s[1]!, 5) << 7) | (Math.imul(s[1]!, 5) >>> 25)) >>> 0, 9) >>> 0
    const t = (s[1]! << 9) >>> 0
    s[2] = (s[2]! ^ s[0]!) >>> 0
    s[3] = (s[3]! ^ s[1]!) >>> 0
    s[1] = (s[1]! ^ s[2]!) >>> 0
    s[0] = (s[0]! ^ s[3]!) >>> 0
    s[2] = (s[2]! ^ t) >>> 0
    s[3] = ((s[3]! << 11) | (s[3]! >>> 21)) >>> 0
    return result / 4294967296
  }
}

/** `allowed`: a grammar's mask (allowedMask below); the other tokens cannot be drawn. */
export type Sampler = (logits: Float32Array, history: readonly number[], allowed?: Uint32Array) => number

/** A bitmask of allowed token ids: bit (id & 31) of word (id >> 5) set = allowed; ids past its end are not allowed. A
 * grammar's matcher computes it at the head for the next token (engine/constraint.ts); every other token's logit
 * becomes −∞ wherever the row is sampled, so it can never be drawn, whatever the weights. */
export type AllowedMask = Uint32Array

export function argmax(values: ArrayLike<number>): number {
  let best = 0
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i
  return best
}

/** Tokens whose logit is more than CUTOFF·T below the best carry under e^-40 ≈ 4e-18 of its probability each (under 1e-12
 * of the mass over any vocabulary), below what a float64 sum resolves: they are dropped before sorting. */
export const CUTOFF = 40
/** Candidates are sorted as float64 keys with the token id in the low mantissa bits (a float32 logit leaves 29 of them
 * zero), so one native typed-array sort orders them: far cheaper than sorting ids with a comparator. */
const ID_BITS = 0x1fffffff

/** Draws one token from logits given a uniform draw `u` in [0, 1) (unused when greedy). Pure, so the stage that holds
 * the logits (the last one) can sample while the head keeps each request's seeded random stream. */
export function sampleToken(
  input: Float32Array,
  params: SamplingParams,
  history: ArrayLike<number>,
  u: number,
  bias?: LogitBias,
  allowed?: AllowedMask,
): number {
  const logits = penalized(input, 0, params, history, bias)
  if (allowed) return sampleMasked(logits, params, u, allowed)
  if (params.temperature === 0) return argmax(logits)
  const max = logits[argmax(logits)]!
  reserveCandidates(logits.length)
  return drawCandidate(collectCandidates(logits, 0, max - CUTOFF * params.temperature, 0), max, params, u)
}

/** sampleToken under a grammar's mask: the row read through the packed mask (masked-rows.ts, one pass in the shim)
 * rather than copied with −∞ written over every token the mask does not allow. The same tokens: the best allowed
 * logit, then the allowed candidates at or above its floor, in id order. */
function sampleMasked(logits: Float32Array, params: SamplingParams, u: number, allowed: AllowedMask): number {
  const rows = maskedRows()
  const best = rows.argmax(logits, allowed)
  if (best < 0)
    throw new DbcError(
      'E_CONSTRAINT',
      `the grammar's mask allows none of the ${logits.length} tokens (${allowed.length} mask words)`,
      'a matcher that is terminated or disposed has no next token: end the sequence instead of sampling it',
    )
  const max = logits[best]!
  // every allowed logit −∞ (or NaN): nothing to weigh, the first of them
  if (params.temperature === 0 || !(max > -Infinity)) return best
  reserveCandidates(logits.length)
  return drawCandidate(rows.candidates(logits, allowed, max - CUTOFF * params.temperature, keys), max, params, u)
}

/** The repetition penalty, then the additive bias, then the grammar's mask (−∞ for every token it does not allow),
 * applied to a row of logits holding ids [first, first + row.length): a copy when a token they touch falls in it, else
 * the row itself. Stored back as float32, as the logits are, so a split vocabulary gets the same bits. */
export function penalized(
  row: Float32Array,
  first: number,
  params: SamplingParams,
  history: ArrayLike<number>,
  bias?: LogitBias,
  allowed?: AllowedMask,
): Float32Array {
  let out = row
  if (params.repetitionPenalty !== 1 && history.length) {
    for (const id of recentTokens(history, params.repetitionContext)) {
      if (id < first || id >= first + row.length) continue
      if (out === row) out = Float32Array.from(row)
      const v = out[id - first]!
      out[id - first] = v > 0 ? v / params.repetitionPenalty : v * params.repetitionPenalty
    }
  }
  if (bias) {
    for (let k = 0; k < bias.ids.length; k++) {
      const id = bias.ids[k]!
      if (id < first || id >= first + row.length) continue
      if (out === row) out = Float32Array.from(row)
      out[id - first] = out[id - first]! + bias.values[k]!
    }
  }
  if (allowed) {
    if (out === row) out = Float32Array.from(row)
    maskRow(out, first, allowed)
  }
  return out
}

/** Sets to −∞ every logit of `out` (ids from `first`) whose token `allowed` does not allow, a 32-token word at a time. */
function maskRow(out: Float32Array, first: number, allowed: AllowedMask): void {
  const end = first + out.length
  for (let id = first; id < end;) {
    const w = id >> 5
    const stop = Math.min(end, (w + 1) << 5)
    const bits = w < allowed.length ? allowed[w]! : 0
    if (bits === 0xffffffff) id = stop
    else if (bits === 0) {
      out.fill(-Infinity, id - first, stop - first)
      id = stop
    } else for (; id < stop; id++) if (!((bits >>> (id & 31)) & 1)) out[id - first] = -Infinity
  }
}

/** Room for `n` candidates in the sampler's scratch. */
export function reserveCandidates(n: number): void {
  if (keys.length >= n) return
  keys = new Float64Array(n)
  words = new Uint32Array(keys.buffer)
  probs = new Float64Array(n)
}

/** Appends, after the `n` candidates already collected, every value at or above `floor` (in order), as keys −logit | id,
 * with ids `first + j` or `ids[j]`; returns the new count. Ascending keys = descending logits, ties broken by id. */
export function collectCandidates(
  values: ArrayLike<number>,
  first: number,
  floor: number,
  n: number,
  ids?: ArrayLike<number>,
): number {
  for (let j = 0; j < values.length; j++) {
    const v = values[j]!
    if (!(v >= floor)) continue
    keys[n] = -v
    words[2 * n] = (words[2 * n]! | (ids ? ids[j]! : first + j)) >>> 0
    n++
  }
  return n
}

/** Draws from the `n` collected candidates, `max` being the best logit of the whole vocabulary. */
export function drawCandidate(n: number, max: number, params: SamplingParams, u: number): number {
  const ordered = params.topK > 0 || params.topP < 1 || params.minP > 0
  if (ordered) keys.subarray(0, n).sort()
  const id = (j: number) => words[2 * j]! & ID_BITS
  // a candidate's logit is its key with the id bits cleared: a float32 leaves them zero
  const logit = (j: number) => {
    one[0] = keys[j]!
    oneWords[0] = (oneWords[0]! & ~ID_BITS) >>> 0
    return -one[0]
  }
  // Filters keep a prefix of the sorted candidates: top-k, then min-p and top-p on the top-k set's probabilities.
  const k = params.topK > 0 ? Math.min(params.topK, n) : n
  let total = 0
  for (let j = 0; j < k; j++) total += probs[j] = Math.exp((logit(j) - max) / params.temperature)
  let keep = k
  if (params.minP > 0) {
    let m = 0
    while (m < k && probs[m]! >= params.minP * probs[0]!) m++
    keep = Math.min(keep, Math.max(1, m))
  }
  if (params.topP < 1) {
    let cum = 0
    for (let j = 0; j < keep; j++) {
      cum += probs[j]! / total
      if (cum >= params.topP) {
        keep = j + 1
        break
      }
    }
  }
  let mass = 0
  for (let j = 0; j < keep; j++) mass += probs[j]!
  let r = u * mass
  for (let j = 0; j < keep; j++) {
    r -= probs[j]!
    if (r <= 0) return id(j)
  }
  return id(keep - 1)
}

// scratch for the candidates: JavaScript runs one sampler at a time, so one set of buffers serves every request
let keys = new Float64Array(0)
let words = new Uint32Array(0)
let probs = new Float64Array(0)
const one = new Float64Array(1)
const oneWords = new Uint32Array(one.buffer)

/** The distinct tokens among the last `n` of a history (what the repetition penalty looks at). */
export function recentTokens(history: ArrayLike<number>, n: number): Set<number> {
  const out = new Set<number>()
  for (let i = Math.max(0, history.length - n); i < history.length; i++) out.add(history[i]!)
  return out
}

/** A request's sampler with its own seeded random stream: one draw per non-greedy token. */
export function makeSampler(params: SamplingParams): Sampler {
  const random = seededRandom(params.seed ?? Math.floor(Math.random() * 2 ** 32))
  return (logits, history, allowed) =>
    sampleToken(logits, params, history, params.temperature === 0 ? 0 : random(), undefined, allowed)
}

export interface TokenLogprob {
  id: number
  logprob: number
}

/** log-softmax of the chosen token, and the top-k alternatives when asked. */
export function logprobsOf(
  logits: Float32Array,
  id: number,
  top: number,
): { logprob: number; topLogprobs?: TokenLogprob[] } {
  let max = -Infinity
  for (const v of logits) if (v > max) max = v
  let sum = 0
  for (const v of logits) sum += Math.exp(v - max)
  const norm = max + Math.log(sum)
  const result: { logprob: number; topLogprobs?: TokenLogprob[] } = { logprob: logits[id]! - norm }
  if (top > 0) {
    const best: TokenLogprob[] = []
    for (let i = 0; i < logits.length; i++) {
      const v = logits[i]!
      if (best.length < top || v > best.at(-1)!.logprob) {
        best.push({ id: i, logprob: v })
        best.sort((a, b) => b.logprob - a.logprob || a.id - b.id)
        if (best.length > top) best.pop()
      }
    }
    result.topLogprobs = best.map((b) => ({ id: b.id, logprob: b.logprob - norm }))
  }
  return result
}

/** How one logit row is to be sampled where the logits are: the request's parameters, its pre-drawn uniform, the recent
 * tokens the repetition penalty needs (empty when there is no penalty), its logit bias and penalties resolved to values
 * (absent: none), its grammar's allowed tokens (absent: unconstrained) and how many log-probabilities to report. */
export interface RowSampling {
  params: SamplingParams
  u: number
  history: Int32Array
  bias?: LogitBias
  allowed?: AllowedMask
  /** -1: none; 0: the chosen token's; k: also the k most likely (of the model's logits, before penalties and bias). */
  logprobs: number
}

export interface SampledToken {
  id: number
  logprob?: number
  topLogprobs?: TokenLogprob[]
}

/** Samples every row of [rows, vocab] logits. */
export function sampleRows(logits: Float32Array, vocab: number, rows: readonly RowSampling[]): SampledToken[] {
  if (logits.length !== rows.length * vocab)
    throw new RangeError(`${logits.length / vocab} logit rows for ${rows.length} sampling rows`)
  return rows.map((row, i) => {
    const l = logits.subarray(i * vocab, (i + 1) * vocab)
    const id = sampleToken(l, row.params, row.history, row.u, row.bias, row.allowed)
    return row.logprobs >= 0 ? { id, ...logprobsOf(l, id, row.logprobs) } : { id }
  })
}

/** What the head sends for a row: the history window only when a penalty needs it, the bias and the mask only when
 * there is one. */
export function rowSampling(
  params: SamplingParams,
  history: readonly number[],
  u: number,
  logprobs = -1,
  bias?: LogitBias,
  allowed?: AllowedMask,
): RowSampling {
  const window = params.repetitionPenalty === 1 ? [] : history.slice(-params.repetitionContext)
  return {
    params,
    u,
    history: Int32Array.from(window),
    ...(bias ? { bias } : {}),
    ...(allowed ? { allowed } : {}),
    logprobs,
  }
}
