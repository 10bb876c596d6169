/** Sampling: greedy, temperature, top-k, top-p, min-p and repetition penalty, with a seeded PRNG (same seed → same output).
 * makeSampler(params) returns a plain function from logits to a token id (mlx-lm sample_utils style). */
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

export const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, repetitionPenalty: 1, repetitionContext: 64 }

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

export type Sampler = (logits: Float32Array, history: readonly number[]) => number

export function argmax(values: ArrayLike<number>): number {
  let best = 0
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i
  return best
}

/** Tokens whose logit is more than CUTOFF·T below the best carry under e^-40 ≈ 4e-18 of its probability each (under 1e-12
 * of the mass over any vocabulary), below what a float64 sum resolves: they are dropped before sorting. */
const CUTOFF = 40
/** Candidates are sorted as float64 keys with the token id in the low mantissa bits (a float32 logit leaves 29 of them
 * zero), so one native typed-array sort orders them: far cheaper than sorting ids with a comparator. */
const ID_BITS = 0x1fffffff

export function makeSampler(params: SamplingParams): Sampler {
  const random = seededRandom(params.seed ?? Math.floor(Math.random() * 2 ** 32))
  const ordered = params.topK > 0 || params.topP < 1 || params.minP > 0
  let keys = new Float64Array(0)
  let words = new Uint32Array(0)
  let probs = new Float64Array(0)
  return (input, history) => {
    let logits = input
    if (params.repetitionPenalty !== 1 && history.length) {
      logits = Float32Array.from(input)
      for (const id of new Set(history.slice(-params.repetitionContext))) {
        const v = logits[id]!
        logits[id] = v > 0 ? v / params.repetitionPenalty : v * params.repetitionPenalty
      }
    }
    if (params.temperature === 0) return argmax(logits)
    if (keys.length < logits.length) {
      keys = new Float64Array(logits.length)
      words = new Uint32Array(keys.buffer)
      probs = new Float64Array(logits.length)
    }
    const best = argmax(logits)
    const max = logits[best]!
    const floor = max - CUTOFF * params.temperature
    // candidates, as keys −logit | id (ascending keys = descending logits; ties broken by id, deterministically)
    let n = 0
    for (let i = 0; i < logits.length; i++) {
      const v = logits[i]!
      if (!(v >= floor)) continue
      keys[n] = -v
      words[2 * n] = (words[2 * n]! | i) >>> 0
      n++
    }
    if (ordered) keys.subarray(0, n).sort()
    const id = (j: number) => words[2 * j]! & ID_BITS
    // Filters keep a prefix of the sorted candidates: top-k, then min-p and top-p on the top-k set's probabilities.
    const k = params.topK > 0 ? Math.min(params.topK, n) : n
    let total = 0
    for (let j = 0; j < k; j++) total += probs[j] = Math.exp((logits[id(j)]! - max) / params.temperature)
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
    let r = random() * mass
    for (let j = 0; j < keep; j++) {
      r -= probs[j]!
      if (r <= 0) return id(j)
    }
    return id(keep - 1)
  }
}
