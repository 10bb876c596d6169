/** The Backend seam: an op-level API shaped like the subset of MLX that decoder models use; `cpu` and `mlx` implement it. */

export type DType = 'f32' | 'f16' | 'bf16' | 'u32' | 'i32' | 'u8'

/** An opaque tensor owned by one backend. Row-major, contiguous. Activations are f32; weights may be f32/f16/bf16 or quantized. */
export interface Tensor {
  readonly shape: readonly number[]
  readonly dtype: DType
}

/** An MLX-quantized matrix [N, K] (or experts [E, N, K] for gatherLinear): weight u32 [N, K·bits/32]. Affine: scales
 * and biases [N, K/groupSize] in the model dtype. mxfp4 (no biases): 4-bit E2M1 values, group 32, u8 E8M0 scales. */
export interface QuantizedMatrix {
  readonly weight: Tensor
  readonly scales: Tensor
  /** Absent for mxfp4. */
  readonly biases?: Tensor
  readonly groupSize: number
  readonly bits: number
}

export interface RopeOptions {
  /** Number of leading feature dims rotated (usually head_dim). */
  dims: number
  /** true: rotate adjacent pairs (2i, 2i+1); false (Llama/Qwen default): rotate (i, i + dims/2). */
  traditional: boolean
  /** Base of the geometric frequency ladder; ignored when `freqs` is given. */
  base: number
  /** Multiplies positions (MLX `scale`; linear rope scaling is 1/factor). */
  scale: number
  /** Optional per-pair wavelengths (MLX `freqs`, e.g. llama3 scaling); theta = position·scale / freqs[i]. */
  freqs?: Float32Array
}

export interface AttentionOptions {
  /** Multiplies q·k (usually 1/sqrt(head_dim)). */
  scale: number
  /** true: row r attends keys [0, positions[r]] of its slot; false: keys [0, kvLength). */
  causal: boolean
  /** Number of keys per slot when causal is false. */
  kvLength?: number
  /** Additive f32 mask [rows, width] over key index (width ≥ keys attended); -Infinity hides a key. */
  mask?: Tensor
  /** Sliding window: only keys j > positions[r] - window are attended (0 = no window). */
  window?: number
  /** Per-head sink logits [heads] (f32) joining the softmax denominator (GPT-OSS). */
  sinks?: Tensor
  /** The caches are rings written with `kvWrite(..., { ring: true })`: needs causal, no mask, 1 ≤ window ≤ the ring's
   * length, and the rows of one slot spanning at most length − window positions (so no key a row needs is overwritten). */
  ring?: boolean
}

export interface KvWriteOptions {
  /** The cache is a ring: position p lands at index p mod its length, so it keeps the last `length` positions. */
  ring?: boolean
}

/** swiglu_clipped: GPT-OSS's min(g, 7)·σ(1.702·min(g, 7))·(clip(u, ±7) + 1); sigmoid: σ(g)·u (gated attention). */
export type GluActivation = 'silu' | 'gelu' | 'gelu_approx' | 'swiglu_clipped' | 'sigmoid'

/** How the cpu backend multiplies 4- and 8-bit weights: 'fast' rounds the activations to int8 per group for integer
 * dot products (llama.cpp's Q8 activations; the default), 'exact' keeps them in float (--precision exact: slower, and as
 * faithful to the float64 reference as the weights allow). mlx computes in float either way. */
export type Precision = 'fast' | 'exact'

export interface Backend {
  readonly name: 'cpu' | 'mlx'
  readonly threads: number
  readonly precision: Precision
  /** The dtype of the KV caches kvWrite and attention work on here: f16 on the cpu backend (half the bytes attention
   * streams per step and a cache holds; its kernels widen to f32 as they load), f32 on mlx (its glue takes f32 caches). */
  readonly kvDtype: 'f32' | 'f16'

  // creation and transfer
  fromFloat32(data: Float32Array, shape: readonly number[]): Tensor
  fromInt32(data: Int32Array, shape: readonly number[]): Tensor
  /** Wraps raw little-endian bytes (e.g. a memory-mapped checkpoint). With borrow, no copy is made and `bytes` stays referenced. */
  fromBytes(bytes: Uint8Array, shape: readonly number[], dtype: DType, options?: { borrow?: boolean }): Tensor
  zeros(shape: readonly number[], dtype: DType): Tensor
  /** With `into` (at least as long as x): fills it instead of allocating, and returns its first numel(x) values. */
  toFloat32(x: Tensor, into?: Float32Array): Float32Array
  toInt32(x: Tensor): Int32Array
  toBytes(x: Tensor): Uint8Array
  astype(x: Tensor, dtype: DType): Tensor

  // layout
  /** A view with the same data and a new shape (no copy). */
  reshape(x: Tensor, shape: readonly number[]): Tensor
  transpose(x: Tensor, perm: readonly number[]): Tensor
  slice(x: Tensor, axis: number, start: number, end: number): Tensor
  concat(a: Tensor, b: Tensor, axis: number): Tensor

  // linear algebra
  /** a [M, K] · b [K, N] → [M, N], f32. */
  matmul(a: Tensor, b: Tensor): Tensor
  /** x [..., K] · wᵀ with w [N, K] (a Linear layer's weight), plus optional bias [N] → [..., N] f32. */
  linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor
  /** precise: keep x in float; the cpu decode kernels otherwise round x to int8 per group (4- and 8-bit weights), which
   * a recurrent state would accumulate. */
  quantizedLinear(x: Tensor, w: QuantizedMatrix, bias?: Tensor, options?: { precise?: boolean }): Tensor
  /** Puts w in the layout quantizedLinear's kernel reads now, so the first request does not pay for it. True when the
   * kernel keeps a copy of its own (the cpu backend repacks 4-bit weights on AVX-512 VNNI machines and keeps the copy
   * with w; it then reads only that copy), false when it reads w as it is. */
  prepareQuantized(w: QuantizedMatrix): boolean
  dequantize(w: QuantizedMatrix): Tensor
  /** Mixture of experts: x [rows, K] (or [rows, k, K]) through expert indices[r, j] (i32 [rows, k]) of w [E, N, K]
   * (dense or quantized), plus bias [E, N] → [rows, k, N] f32. */
  gatherLinear(x: Tensor, w: Tensor | QuantizedMatrix, indices: Tensor, bias?: Tensor): Tensor
  /** Σ_j weights[r, j] · x[r, j, :]: x [rows, k, N], weights f32 [rows, k] → [rows, N]. */
  weightedSum(x: Tensor, weights: Tensor): Tensor
  /** table [V, H] gathered at ids (i32) → [...ids.shape, H] f32. */
  embedding(table: Tensor, ids: Tensor): Tensor
  quantizedEmbedding(table: QuantizedMatrix, ids: Tensor): Tensor

  // normalisation, position, attention
  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor
  /** x [rows, heads, headDim] rotated at per-row positions (i32 [rows]). */
  rope(x: Tensor, positions: Tensor, options: RopeOptions): Tensor
  /** Writes x [rows, kvHeads, headDim] (f32) into cache [slots, kvHeads, maxLen, headDim] (kvDtype, rounded to it) at
   * (slots[r], positions[r]). In place. */
  kvWrite(cache: Tensor, x: Tensor, slots: Tensor, positions: Tensor, options?: KvWriteOptions): void
  /** A prefix-cache block (docs/prefix-cache.md): positions [start, end) of `slot` of cache [slots, kvHeads, length,
   * headDim] copied as they are, no conversion, into a new [kvHeads, end − start, headDim] of the cache's dtype. With
   * ring, position p is at index p mod length (at most length positions). */
  kvReadBlock(cache: Tensor, slot: number, start: number, end: number, options?: KvWriteOptions): Tensor
  /** Writes a block [kvHeads, n, headDim] (the cache's dtype) back at positions [start, start + n) of `slot`, byte for
   * byte. In place. */
  kvWriteBlock(cache: Tensor, block: Tensor, slot: number, start: number, options?: KvWriteOptions): void
  /** q [rows, heads, headDim] over the cached keys/values of each row's slot (GQA when heads > kvHeads) → [rows, heads, headDim]. */
  attention(
    q: Tensor,
    kCache: Tensor,
    vCache: Tensor,
    slots: Tensor,
    positions: Tensor,
    options: AttentionOptions,
  ): Tensor

  // linear-attention recurrences (Qwen3.5 Gated DeltaNet): per-slot states updated in place, rows in order; a row at
  // position 0 starts its slot from a zero state (a reused slot needs no reset)
  /** Causal depthwise conv1d: x [rows, C] with weight [C, K] over the slot's last K−1 inputs (state f32 [slots, K−1, C]). */
  causalConv(x: Tensor, weight: Tensor, state: Tensor, slots: Tensor, positions: Tensor): Tensor
  /** Gated delta rule (mlx-lm gated_delta_update): q, k [rows, Hk, Dk] (normalised), v [rows, Hv, Dv], a, b [rows, Hv],
   * aLog, dtBias [Hv], state f32 [slots, Hv, Dv, Dk] → y [rows, Hv, Dv]. */
  gatedDelta(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    aLog: Tensor,
    dtBias: Tensor,
    state: Tensor,
    slots: Tensor,
    positions: Tensor,
  ): Tensor

  // elementwise and reductions (b broadcasts when its shape is a suffix of a's)
  add(a: Tensor, b: Tensor): Tensor
  mul(a: Tensor, b: Tensor): Tensor
  scale(x: Tensor, factor: number): Tensor
  silu(x: Tensor): Tensor
  tanh(x: Tensor): Tensor
  gelu(x: Tensor, approximate?: boolean): Tensor
  /** activation(gate) · up, fused (SwiGLU / GeGLU). */
  glu(gate: Tensor, up: Tensor, activation: GluActivation): Tensor
  softmax(x: Tensor): Tensor
  /** Index of the largest value along the last axis → i32 [rows]. */
  argmax(x: Tensor): Tensor
  /** The k largest values along the last axis, sorted descending, with their indices (i32). */
  topk(x: Tensor, k: number): { values: Tensor; indices: Tensor }

  // memory
  free(x: Tensor): void
  /** Runs fn and frees every tensor it created except those it returns (a tensor, or arrays/objects of them) or passes to keep(). */
  scope<T>(fn: () => T): T
  /** Exempts a tensor from the current scope's cleanup (it moves to the enclosing scope, or is owned by the caller at top level). */
  keep<T extends Tensor>(x: T): T
  /** Bytes held by live backend allocations (for leak tests and memory reports). */
  liveBytes(): number
}

/** How an implementation reports whether it can run here (mlx distributed style: honest unavailability, not a fake). */
export type BackendProbe = { available: true } | { available: false; reason: string }

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, u32: 4, i32: 4, u8: 1 }

export function numel(shape: readonly number[]): number {
  let n = 1
  for (const d of shape) n *= d
  return n
}
