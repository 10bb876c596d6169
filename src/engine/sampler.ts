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

export function makeSampler(params: SamplingParams): Sampler {
  const random = seededRandom(params.seed ?? Math.floor(Math.random() * 2 ** 32))
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
    // Candidates sorted by logit; filters keep a prefix of that order.
    let order = Array.from(logits.keys())
    const k = params.topK > 0 ? Math.min(params.topK, logits.length) : logits.length
    order.sort((a, b) => logits[b]! - logits[a]! || a - b)
    order = order.slice(0, k)
    const max = logits[order[0]!]!
    let probs = order.map((i) => Math.exp((logits[i]! - max) / params.temperature))
    let total = probs.reduce((a, b) => a + b, 0)
    probs = probs.map((p) => p / total)
    let keep = probs.length
    if (params.minP > 0) keep = Math.min(keep, Math.max(1, probs.filter((p) => p >= params.minP * probs[0]!).length))
    if (params.topP < 1) {
      let cum = 0
      for (let i = 0; i < keep; i++) {
        cum += probs[i]!
        if (cum >= params.topP) {
          keep = i + 1
          break
        }
      }
    }
    total = 0
    for (let i = 0; i < keep; i++) total += probs[i]!
    let r = random() * total
    for (let i = 0; i < keep; i++) {
      r -= probs[i]!
      if (r <= 0) return order[i]!
    }
    return order[keep - 1]!
  }
}
