/** Plain float64 reference kernels: simple loops, no imports from src/, written from the ops' definitions (MLX semantics). */

export type F = Float64Array | Float32Array | number[]

export function linear(x: F, w: F, M: number, N: number, K: number, bias?: F): Float64Array {
  const out = new Float64Array(M * N)
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = bias ? Number(bias[n]) : 0
      for (let k = 0; k < K; k++) s += Number(x[m * K + k]) * Number(w[n * K + k])
      out[m * N + n] = s
    }
  return out
}

export function matmul(a: F, b: F, M: number, K: number, N: number): Float64Array {
  const out = new Float64Array(M * N)
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0
      for (let k = 0; k < K; k++) s += Number(a[m * K + k]) * Number(b[k * N + n])
      out[m * N + n] = s
    }
  return out
}

/** MLX affine dequantization: element k of row n is bits [k·b, k·b+b) of the row's LSB-first bitstream. */
export function dequantize(
  words: Uint32Array,
  scales: F,
  biases: F,
  N: number,
  K: number,
  groupSize: number,
  bits: number,
): Float64Array {
  const out = new Float64Array(N * K)
  const wordsPerRow = (K * bits) / 32
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      let q = 0
      for (let i = 0; i < bits; i++) {
        const bit = k * bits + i
        const word = words[n * wordsPerRow + Math.floor(bit / 32)]!
        q |= ((word >>> (bit % 32)) & 1) << i
      }
      const g = n * (K / groupSize) + Math.floor(k / groupSize)
      out[n * K + k] = Number(scales[g]) * q + Number(biases[g])
    }
  return out
}

/** The 16 FP4 E2M1 values by code: sign bit 3, then 2 exponent bits and 1 mantissa bit (OCP MX spec). */
export function fp4e2m1(code: number): number {
  const sign = code & 8 ? -1 : 1
  const e = (code >> 1) & 3,
    m = code & 1
  return sign * (e === 0 ? m * 0.5 : 2 ** (e - 1) * (1 + m / 2))
}

/** MX FP4 dequantization: 4-bit E2M1 codes packed LSB-first (as MLX packs 4-bit values), groups of 32 sharing an
 * E8M0 scale 2^(s − 127). */
export function dequantizeMxfp4(words: Uint32Array, scales: Uint8Array, N: number, K: number): Float64Array {
  const out = new Float64Array(N * K)
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      const code = (words[(n * K + k) >> 3]! >>> (4 * (k & 7))) & 15
      out[n * K + k] = fp4e2m1(code) * 2 ** (scales[n * (K / 32) + (k >> 5)]! - 127)
    }
  return out
}

/** GPT-OSS's clipped SwiGLU on one gate/up pair (mlx-lm gpt_oss.swiglu, alpha 1.702, limit 7). */
export function swigluClipped(gate: number, up: number): number {
  const g = Math.min(gate, 7)
  const u = Math.min(Math.max(up, -7), 7)
  return (g / (1 + Math.exp(-1.702 * g))) * (u + 1)
}

/** A causal depthwise conv1d over one sequence: out[t][c] = Σ_j w[c][j]·x[t − (K−1) + j][c], inputs before 0 being 0. */
export function causalConv(x: number[][], w: ArrayLike<number>, K: number): number[][] {
  return x.map((_, t) =>
    x[t]!.map((_, c) => {
      let s = 0
      for (let j = 0; j < K; j++) {
        const at = t - (K - 1) + j
        if (at >= 0) s += Number(w[c * K + j]) * x[at]![c]!
      }
      return s
    }),
  )
}

/** The gated delta rule over one sequence (Yang et al., Gated Delta Networks; mlx-lm gated_delta_ops), float64:
 * per value head h with key head h / (Hv/Hk): S ← g·S; S ← S + k ⊗ (v − S·k)·β; y = S·q, where
 * g = exp(−exp(aLog)·softplus(a + dtBias)) and β = sigmoid(b). q, k: [T][Hk·Dk]; v: [T][Hv·Dv]; a, b: [T][Hv]. */
export function gatedDelta(
  q: number[][],
  k: number[][],
  v: number[][],
  a: number[][],
  b: number[][],
  aLog: ArrayLike<number>,
  dtBias: ArrayLike<number>,
  Hk: number,
  Hv: number,
  Dk: number,
  Dv: number,
): number[][] {
  const S = Array.from({ length: Hv }, () => Array.from({ length: Dv }, () => new Float64Array(Dk)))
  return q.map((_, t) => {
    const y = new Array<number>(Hv * Dv).fill(0)
    for (let h = 0; h < Hv; h++) {
      const hk = Math.floor(h / (Hv / Hk))
      const x = a[t]![h]! + Number(dtBias[h])
      const g = Math.exp(-Math.exp(Number(aLog[h])) * Math.log1p(Math.exp(x)))
      const beta = 1 / (1 + Math.exp(-b[t]![h]!))
      const kk = k[t]!.slice(hk * Dk, (hk + 1) * Dk),
        qq = q[t]!.slice(hk * Dk, (hk + 1) * Dk)
      for (let dv = 0; dv < Dv; dv++) {
        const row = S[h]![dv]!
        for (let d = 0; d < Dk; d++) row[d]! *= g
        const mem = row.reduce((acc, s, d) => acc + s * kk[d]!, 0)
        const delta = (v[t]![h * Dv + dv]! - mem) * beta
        for (let d = 0; d < Dk; d++) row[d]! += kk[d]! * delta
        y[h * Dv + dv] = row.reduce((acc, s, d) => acc + s * qq[d]!, 0)
      }
    }
    return y
  })
}

/** Packs q values (one row after another) into u32 words, LSB-first. */
export function packBits(q: number[] | Uint8Array, N: number, K: number, bits: number): Uint32Array {
  const wordsPerRow = (K * bits) / 32
  const out = new Uint32Array(N * wordsPerRow)
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++)
      for (let i = 0; i < bits; i++) {
        if ((q[n * K + k]! >> i) & 1) {
          const bit = k * bits + i
          out[n * wordsPerRow + Math.floor(bit / 32)]! |= 1 << (bit % 32)
          out[n * wordsPerRow + Math.floor(bit / 32)] = out[n * wordsPerRow + Math.floor(bit / 32)]! >>> 0
        }
      }
  return out
}

export function rmsNorm(x: F, w: F, rows: number, cols: number, eps: number): Float64Array {
  const out = new Float64Array(rows * cols)
  for (let r = 0; r < rows; r++) {
    let ss = 0
    for (let i = 0; i < cols; i++) ss += Number(x[r * cols + i]) ** 2
    const inv = 1 / Math.sqrt(ss / cols + eps)
    for (let i = 0; i < cols; i++) out[r * cols + i] = Number(x[r * cols + i]) * inv * Number(w[i])
  }
  return out
}

/** RoPE on x [rows, heads, D]: theta_i = pos·scale·invFreq_i, pairs (i, i+dims/2) or (2i, 2i+1) when traditional. */
export function rope(
  x: F,
  positions: number[],
  heads: number,
  D: number,
  dims: number,
  traditional: boolean,
  scale: number,
  invFreq: number[],
): Float64Array {
  const rows = positions.length
  const out = Float64Array.from(x as ArrayLike<number>)
  const half = dims / 2
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < heads; h++) {
      const base = (r * heads + h) * D
      for (let i = 0; i < half; i++) {
        const theta = positions[r]! * scale * invFreq[i]!
        const a = traditional ? 2 * i : i
        const b = traditional ? 2 * i + 1 : i + half
        const x1 = Number(x[base + a]),
          x2 = Number(x[base + b])
        out[base + a] = x1 * Math.cos(theta) - x2 * Math.sin(theta)
        out[base + b] = x1 * Math.sin(theta) + x2 * Math.cos(theta)
      }
    }
  return out
}

export interface AttentionCase {
  q: F // [rows, H, D]
  k: F // [slots, KH, L, D]
  v: F
  slots: number[]
  positions: number[]
  H: number
  KH: number
  L: number
  D: number
  scale: number
  causal: boolean
  kvLength?: number
  mask?: F // [rows, width]
  maskWidth?: number
  window?: number
  sinks?: F
}

export function attention(c: AttentionCase): Float64Array {
  const rows = c.positions.length
  const out = new Float64Array(rows * c.H * c.D)
  const group = c.H / c.KH
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < c.H; h++) {
      const kvh = Math.floor(h / group)
      const end = c.causal ? c.positions[r]! + 1 : c.kvLength!
      const start = c.window ? Math.max(0, end - c.window) : 0
      const scores: number[] = []
      for (let j = start; j < end; j++) {
        let s = 0
        for (let d = 0; d < c.D; d++) {
          s += Number(c.q[(r * c.H + h) * c.D + d]) * Number(c.k[((c.slots[r]! * c.KH + kvh) * c.L + j) * c.D + d])
        }
        s *= c.scale
        if (c.mask) s += Number(c.mask[r * c.maskWidth! + j])
        scores.push(s)
      }
      const sink = c.sinks ? Number(c.sinks[h]) : -Infinity
      const m = Math.max(sink, ...scores)
      let denom = Math.exp(sink - m)
      const p = scores.map((s) => Math.exp(s - m))
      for (const e of p) denom += e
      for (let d = 0; d < c.D; d++) {
        let acc = 0
        for (let j = start; j < end; j++)
          acc += p[j - start]! * Number(c.v[((c.slots[r]! * c.KH + kvh) * c.L + j) * c.D + d])
        out[(r * c.H + h) * c.D + d] = acc / denom
      }
    }
  return out
}

export const silu = (x: number): number => x / (1 + Math.exp(-x))
export const geluTanh = (x: number): number =>
  0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)))
/** Exact GELU with erf from Abramowitz–Stegun 7.1.26 refined by one Newton step is overkill; use a series good to 1e-12. */
export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2))
}
export function erf(x: number): number {
  // Taylor series for |x| < 3, continued-fraction-free tail via complementary asymptotics beyond.
  const ax = Math.abs(x)
  if (ax > 6) return Math.sign(x)
  let sum = 0
  let term = ax
  for (let n = 0; n < 200; n++) {
    sum += term / (2 * n + 1)
    term *= (-ax * ax) / (n + 1)
    if (Math.abs(term) < 1e-17) break
  }
  return Math.sign(x) * ((2 / Math.sqrt(Math.PI)) * sum)
}

export function softmax(x: F, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols)
  for (let r = 0; r < rows; r++) {
    let m = -Infinity
    for (let i = 0; i < cols; i++) m = Math.max(m, Number(x[r * cols + i]))
    let s = 0
    for (let i = 0; i < cols; i++) s += out[r * cols + i] = Math.exp(Number(x[r * cols + i]) - m)
    for (let i = 0; i < cols; i++) out[r * cols + i]! /= s
  }
  return out
}

/** bfloat16 round-to-nearest-even of a float32 value, returned as the value it represents. */
export function roundBf16(x: number): number {
  const f = new Float32Array([x])
  const u = new Uint32Array(f.buffer)
  const bits = u[0]!
  u[0] = ((bits + 0x7fff + ((bits >>> 16) & 1)) & 0xffff0000) >>> 0
  return f[0]!
}

export function bf16Bytes(values: ArrayLike<number>): Uint8Array {
  const f = new Float32Array(values.length)
  for (let i = 0; i < values.length; i++) f[i] = roundBf16(values[i]!)
  const u = new Uint32Array(f.buffer)
  const out = new Uint16Array(values.length)
  for (let i = 0; i < values.length; i++) out[i] = u[i]! >>> 16
  return new Uint8Array(out.buffer)
}

export function f16Bytes(values: ArrayLike<number>): Uint8Array {
  const out = new Float16Array(values.length)
  for (let i = 0; i < values.length; i++) out[i] = values[i]!
  return new Uint8Array(out.buffer)
}

/** A seeded PRNG (mulberry32) so every test input is reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function randn(count: number, random: () => number, scale = 1): Float32Array {
  const out = new Float32Array(count)
  for (let i = 0; i < count; i++) {
    const u = Math.max(random(), 1e-12),
      v = random()
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
  }
  return out
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!))
  return m
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!))
  return m
}
