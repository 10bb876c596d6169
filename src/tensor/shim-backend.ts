/** ShimBackend: the Backend API over a library implementing ffi/dbc.h, with explicit ownership (scopes and frees). */
import { DbcError } from '../errors.ts'
import {
  DTYPE_BYTES,
  numel,
  type AttentionOptions,
  type Backend,
  type DType,
  type GluActivation,
  type KvWriteOptions,
  type Precision,
  type QuantizedMatrix,
  type RopeOptions,
  type Tensor,
} from './backend.ts'
import { DTYPE_BY_CODE, DTYPE_CODES } from './dtype.ts'
import { check, ptr, type Pointer, type ShimSymbols } from './native.ts'

/** A tensor handle from the shim; freed explicitly or by the scope that created it. */
class ShimTensor implements Tensor {
  #handle: Pointer | null
  constructor(
    handle: Pointer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** Keeps borrowed memory (a mapped checkpoint) alive while the tensor lives. */
    readonly keepAlive?: Uint8Array,
  ) {
    this.#handle = handle
  }
  get handle(): Pointer {
    if (this.#handle === null)
      throw new DbcError(
        'E_TENSOR_FREED',
        `a ${this.dtype}[${this.shape.join(', ')}] tensor was used after it was freed`,
      )
    return this.#handle
  }
  get freed(): boolean {
    return this.#handle === null
  }
  release(): Pointer | null {
    const h = this.#handle
    this.#handle = null
    return h
  }
}

const GLU_CODES: Record<GluActivation, number> = { silu: 0, gelu: 1, gelu_approx: 2, swiglu_clipped: 3, sigmoid: 4 }

/** A Backend over any library that implements ffi/dbc.h: eager on the cpu shim, lazy (evaluated on read) on the mlx glue. */
export class ShimBackend implements Backend {
  readonly threads: number
  readonly kvDtype: 'f32' | 'f16'
  /** What the library says it is, e.g. "cpu" or "mlx 0.31.2 (gpu)". */
  readonly description: string
  readonly #lib: ShimSymbols
  readonly #out = new BigUint64Array(new ArrayBuffer(32))
  readonly #outPtr = ptr(this.#out)
  readonly #shape = new BigInt64Array(new ArrayBuffer(64))
  readonly #shapePtr = ptr(this.#shape)
  readonly #info = new BigInt64Array(new ArrayBuffer(80))
  readonly #scopes: { owned: Set<ShimTensor>; kept: Set<ShimTensor> }[] = []

  constructor(
    readonly name: 'cpu' | 'mlx',
    lib: ShimSymbols,
    threads: number,
    readonly precision: Precision = 'fast',
  ) {
    this.#lib = lib
    this.#check(lib.dbc_init(threads))
    this.threads = lib.dbc_thread_count()
    this.kvDtype = name === 'cpu' ? 'f16' : 'f32'
    this.description = String(lib.dbc_backend_name())
  }

  #check(rc: number): void {
    check(rc, this.#lib)
  }

  // ---------- plumbing ----------

  #t(x: Tensor): ShimTensor {
    if (!(x instanceof ShimTensor)) throw new DbcError('E_BACKEND_MISMATCH', 'tensor does not belong to this backend')
    return x
  }

  #h(x: Tensor | undefined): Pointer | null {
    return x === undefined ? null : this.#t(x).handle
  }

  #setShape(shape: readonly number[]): Pointer {
    if (shape.length > 8) throw new DbcError('E_SHAPE', `tensors have at most 8 axes, got ${shape.length}`)
    shape.forEach((d, i) => {
      if (!Number.isInteger(d) || d < 0)
        throw new DbcError('E_SHAPE', `bad dimension ${d} in shape [${shape.join(', ')}]`)
      this.#shape[i] = BigInt(d)
    })
    return this.#shapePtr
  }

  /** Wraps the handle a shim call wrote to out slot `slot`, reading its dtype and shape back from C. */
  #adopt(slot = 0, keepAlive?: Uint8Array): ShimTensor {
    const handle = Number(this.#out[slot]) as Pointer
    this.#check(this.#lib.dbc_tensor_info(handle, ptr(this.#info)))
    const ndim = Number(this.#info[1])
    const shape: number[] = []
    for (let i = 0; i < ndim; i++) shape.push(Number(this.#info[2 + i]))
    const tensor = new ShimTensor(handle, shape, DTYPE_BY_CODE[Number(this.#info[0])]!, keepAlive)
    this.#scopes.at(-1)?.owned.add(tensor)
    return tensor
  }

  #call(rc: number): ShimTensor {
    this.#check(rc)
    return this.#adopt()
  }

  /** Runs a native function of this same library that reads one tensor handle and writes a new one through `out`
   * (MLX distributed's all_sum): the result joins the current scope like any op's. */
  applyNative(x: Tensor, call: (handle: Pointer, out: Pointer) => number): Tensor {
    return this.#call(call(this.#t(x).handle, this.#outPtr))
  }

  // ---------- creation and transfer ----------

  fromFloat32(data: Float32Array, shape: readonly number[]): Tensor {
    return this.#fromTyped(data, shape, 'f32')
  }

  fromInt32(data: Int32Array, shape: readonly number[]): Tensor {
    return this.#fromTyped(data, shape, 'i32')
  }

  #fromTyped(data: Float32Array | Int32Array, shape: readonly number[], dtype: DType): Tensor {
    if (data.length !== numel(shape))
      throw new DbcError('E_SHAPE', `${data.length} values do not fill shape [${shape.join(', ')}]`)
    const t = this.zeros(shape, dtype) as ShimTensor
    if (data.length) this.#check(this.#lib.dbc_tensor_write(t.handle, ptr(data), data.byteLength, 0))
    return t
  }

  fromBytes(bytes: Uint8Array, shape: readonly number[], dtype: DType, options: { borrow?: boolean } = {}): Tensor {
    const need = numel(shape) * DTYPE_BYTES[dtype]
    if (bytes.byteLength !== need) {
      throw new DbcError(
        'E_SHAPE',
        `${bytes.byteLength} bytes do not fill ${dtype}[${shape.join(', ')}] (${need} bytes)`,
      )
    }
    if (options.borrow && need > 0) {
      this.#check(
        this.#lib.dbc_tensor_wrap(
          DTYPE_CODES[dtype],
          shape.length,
          this.#setShape(shape),
          ptr(bytes),
          need,
          this.#outPtr,
        ),
      )
      return this.#adopt(0, bytes)
    }
    const t = this.zeros(shape, dtype) as ShimTensor
    if (need) this.#check(this.#lib.dbc_tensor_write(t.handle, ptr(bytes), need, 0))
    return t
  }

  zeros(shape: readonly number[], dtype: DType): Tensor {
    return this.#call(this.#lib.dbc_tensor_new(DTYPE_CODES[dtype], shape.length, this.#setShape(shape), this.#outPtr))
  }

  toBytes(x: Tensor): Uint8Array {
    const t = this.#t(x)
    const out = new Uint8Array(numel(t.shape) * DTYPE_BYTES[t.dtype])
    if (out.byteLength) this.#check(this.#lib.dbc_tensor_read(t.handle, ptr(out), out.byteLength, 0))
    return out
  }

  toFloat32(x: Tensor, into?: Float32Array): Float32Array {
    if (x.dtype !== 'f32') {
      const converted = this.astype(x, 'f32')
      try {
        return this.toFloat32(converted, into)
      } finally {
        this.free(converted)
      }
    }
    const n = numel(x.shape)
    if (into && into.length < n)
      throw new DbcError('E_ARG', `toFloat32: buffer of ${into.length} values for a tensor of ${n}`)
    const out = into ? into.subarray(0, n) : new Float32Array(n)
    if (out.length) this.#check(this.#lib.dbc_tensor_read(this.#t(x).handle, ptr(out), out.byteLength, 0))
    return out
  }

  toInt32(x: Tensor): Int32Array {
    if (x.dtype !== 'i32' && x.dtype !== 'u32')
      throw new DbcError('E_DTYPE', `toInt32 needs an i32 or u32 tensor, got ${x.dtype}`)
    const out = new Int32Array(numel(x.shape))
    if (out.length) this.#check(this.#lib.dbc_tensor_read(this.#t(x).handle, ptr(out), out.byteLength, 0))
    return out
  }

  astype(x: Tensor, dtype: DType): Tensor {
    return this.#call(this.#lib.dbc_astype(this.#t(x).handle, DTYPE_CODES[dtype], this.#outPtr))
  }

  // ---------- layout ----------

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    if (numel(shape) !== numel(x.shape)) {
      throw new DbcError('E_SHAPE', `cannot reshape [${x.shape.join(', ')}] to [${shape.join(', ')}]`)
    }
    const t = this.#t(x)
    this.#check(this.#lib.dbc_tensor_view(t.handle, shape.length, this.#setShape(shape), 0, this.#outPtr))
    return this.#adopt(0, t.keepAlive)
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    const p = new BigInt64Array(perm.map(BigInt))
    return this.#call(
      this.#lib.dbc_transpose(this.#t(x).handle, perm.length, perm.length ? ptr(p) : null, this.#outPtr),
    )
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    return this.#call(this.#lib.dbc_slice(this.#t(x).handle, axis, start, end, this.#outPtr))
  }

  concat(a: Tensor, b: Tensor, axis: number): Tensor {
    return this.#call(this.#lib.dbc_concat(this.#t(a).handle, this.#t(b).handle, axis, this.#outPtr))
  }

  // ---------- linear algebra ----------

  matmul(a: Tensor, b: Tensor): Tensor {
    return this.#call(this.#lib.dbc_matmul(this.#t(a).handle, this.#t(b).handle, this.#outPtr))
  }

  linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
    return this.#call(this.#lib.dbc_linear(this.#t(x).handle, this.#t(w).handle, this.#h(bias), this.#outPtr))
  }

  quantizedLinear(x: Tensor, w: QuantizedMatrix, bias?: Tensor, options: { precise?: boolean } = {}): Tensor {
    return this.#call(
      this.#lib.dbc_quantized_linear(
        this.#t(x).handle,
        this.#t(w.weight).handle,
        this.#t(w.scales).handle,
        this.#h(w.biases),
        this.#h(bias),
        w.groupSize,
        w.bits,
        options.precise || this.precision === 'exact' ? 1 : 0,
        this.#outPtr,
      ),
    )
  }

  prepareQuantized(w: QuantizedMatrix): boolean {
    if (this.precision === 'exact') return false // the repacked layout is the int8 kernels'
    const rc = this.#lib.dbc_quantized_prepare(
      this.#t(w.weight).handle,
      this.#t(w.scales).handle,
      this.#h(w.biases),
      w.groupSize,
      w.bits,
    )
    if (rc < 0) this.#check(rc)
    return rc === 1
  }

  dequantize(w: QuantizedMatrix): Tensor {
    return this.#call(
      this.#lib.dbc_dequantize(
        this.#t(w.weight).handle,
        this.#t(w.scales).handle,
        this.#h(w.biases),
        w.groupSize,
        w.bits,
        this.#outPtr,
      ),
    )
  }

  gatherLinear(x: Tensor, w: Tensor | QuantizedMatrix, indices: Tensor, bias?: Tensor): Tensor {
    const q = 'scales' in w ? w : undefined
    return this.#call(
      this.#lib.dbc_gather_linear(
        this.#t(x).handle,
        this.#t(q ? q.weight : (w as Tensor)).handle,
        this.#h(q?.scales),
        this.#h(q?.biases),
        this.#h(bias),
        this.#t(indices).handle,
        q?.groupSize ?? 0,
        q?.bits ?? 0,
        this.#outPtr,
      ),
    )
  }

  causalConv(x: Tensor, weight: Tensor, state: Tensor, slots: Tensor, positions: Tensor): Tensor {
    const h = (t: Tensor) => this.#t(t).handle
    return this.#call(this.#lib.dbc_causal_conv(h(x), h(weight), h(state), h(slots), h(positions), this.#outPtr))
  }

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
  ): Tensor {
    const h = (t: Tensor) => this.#t(t).handle
    return this.#call(
      this.#lib.dbc_gated_delta(
        h(q),
        h(k),
        h(v),
        h(a),
        h(b),
        h(aLog),
        h(dtBias),
        h(state),
        h(slots),
        h(positions),
        this.#outPtr,
      ),
    )
  }

  weightedSum(x: Tensor, weights: Tensor): Tensor {
    return this.#call(this.#lib.dbc_weighted_sum(this.#t(x).handle, this.#t(weights).handle, this.#outPtr))
  }

  embedding(table: Tensor, ids: Tensor): Tensor {
    return this.#call(this.#lib.dbc_embedding(this.#t(table).handle, this.#t(ids).handle, this.#outPtr))
  }

  quantizedEmbedding(table: QuantizedMatrix, ids: Tensor): Tensor {
    return this.#call(
      this.#lib.dbc_quantized_embedding(
        this.#t(table.weight).handle,
        this.#t(table.scales).handle,
        this.#h(table.biases),
        table.groupSize,
        table.bits,
        this.#t(ids).handle,
        this.#outPtr,
      ),
    )
  }

  // ---------- normalisation, position, attention ----------

  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
    return this.#call(this.#lib.dbc_rms_norm(this.#t(x).handle, this.#t(weight).handle, eps, this.#outPtr))
  }

  readonly #invFreqCache = new Map<string, ShimTensor>()

  /** MLX: inv_freq[i] = base^(-2i/dims), or 1/freqs[i] when freqs are given. Cached: it is the same every step. */
  #invFreq(options: RopeOptions): ShimTensor {
    const key = options.freqs
      ? `f:${options.dims}:${Array.from(options.freqs).join(',')}`
      : `b:${options.dims}:${options.base}`
    let t = this.#invFreqCache.get(key)
    if (!t) {
      const half = options.dims / 2
      const values = new Float32Array(half)
      for (let i = 0; i < half; i++) {
        values[i] = options.freqs ? 1 / options.freqs[i]! : Math.pow(options.base, (-2 * i) / options.dims)
      }
      const saved = this.#scopes.splice(0)
      t = this.fromFloat32(values, [half]) as ShimTensor
      this.#scopes.push(...saved)
      this.#invFreqCache.set(key, t)
    }
    return t
  }

  rope(x: Tensor, positions: Tensor, options: RopeOptions): Tensor {
    if (options.freqs && options.freqs.length !== options.dims / 2) {
      throw new DbcError(
        'E_SHAPE',
        `rope freqs has ${options.freqs.length} entries, expected dims/2 = ${options.dims / 2}`,
      )
    }
    return this.#call(
      this.#lib.dbc_rope(
        this.#t(x).handle,
        this.#t(positions).handle,
        options.dims,
        options.traditional ? 1 : 0,
        options.scale,
        this.#invFreq(options).handle,
        this.#outPtr,
      ),
    )
  }

  kvWrite(cache: Tensor, x: Tensor, slots: Tensor, positions: Tensor, options: KvWriteOptions = {}): void {
    this.#check(
      this.#lib.dbc_kv_write(
        this.#t(cache).handle,
        this.#t(x).handle,
        this.#t(slots).handle,
        this.#t(positions).handle,
        options.ring ? 1 : 0,
      ),
    )
  }

  kvReadBlock(cache: Tensor, slot: number, start: number, end: number, options: KvWriteOptions = {}): Tensor {
    return this.#call(
      this.#lib.dbc_kv_block_read(this.#t(cache).handle, slot, start, end, options.ring ? 1 : 0, this.#outPtr),
    )
  }

  kvWriteBlock(cache: Tensor, block: Tensor, slot: number, start: number, options: KvWriteOptions = {}): void {
    this.#check(
      this.#lib.dbc_kv_block_write(this.#t(cache).handle, this.#t(block).handle, slot, start, options.ring ? 1 : 0),
    )
  }

  attention(
    q: Tensor,
    kCache: Tensor,
    vCache: Tensor,
    slots: Tensor,
    positions: Tensor,
    options: AttentionOptions,
  ): Tensor {
    if (!options.causal && options.kvLength === undefined) {
      throw new DbcError('E_ARG', 'non-causal attention needs kvLength (how many cached keys each row attends)')
    }
    return this.#call(
      this.#lib.dbc_attention(
        this.#t(q).handle,
        this.#t(kCache).handle,
        this.#t(vCache).handle,
        this.#t(slots).handle,
        this.#t(positions).handle,
        options.scale,
        this.#h(options.mask),
        options.causal ? 1 : 0,
        options.kvLength ?? 0,
        options.window ?? 0,
        options.ring ? 1 : 0,
        this.#h(options.sinks),
        this.#outPtr,
      ),
    )
  }

  // ---------- elementwise and reductions ----------

  add(a: Tensor, b: Tensor): Tensor {
    return this.#call(this.#lib.dbc_add(this.#t(a).handle, this.#t(b).handle, this.#outPtr))
  }
  mul(a: Tensor, b: Tensor): Tensor {
    return this.#call(this.#lib.dbc_mul(this.#t(a).handle, this.#t(b).handle, this.#outPtr))
  }
  scale(x: Tensor, factor: number): Tensor {
    return this.#call(this.#lib.dbc_scale(this.#t(x).handle, factor, this.#outPtr))
  }
  silu(x: Tensor): Tensor {
    return this.#call(this.#lib.dbc_silu(this.#t(x).handle, this.#outPtr))
  }
  tanh(x: Tensor): Tensor {
    return this.#call(this.#lib.dbc_tanh(this.#t(x).handle, this.#outPtr))
  }
  gelu(x: Tensor, approximate = false): Tensor {
    return this.#call(this.#lib.dbc_gelu(this.#t(x).handle, approximate ? 1 : 0, this.#outPtr))
  }
  glu(gate: Tensor, up: Tensor, activation: GluActivation): Tensor {
    return this.#call(this.#lib.dbc_glu(this.#t(gate).handle, this.#t(up).handle, GLU_CODES[activation], this.#outPtr))
  }
  softmax(x: Tensor): Tensor {
    return this.#call(this.#lib.dbc_softmax(this.#t(x).handle, this.#outPtr))
  }
  argmax(x: Tensor): Tensor {
    return this.#call(this.#lib.dbc_argmax(this.#t(x).handle, this.#outPtr))
  }
  topk(x: Tensor, k: number): { values: Tensor; indices: Tensor } {
    this.#check(this.#lib.dbc_topk(this.#t(x).handle, k, this.#outPtr, ptr(this.#out, 8)))
    const values = this.#adopt(0)
    return { values, indices: this.#adopt(1) }
  }

  // ---------- memory ----------

  free(x: Tensor): void {
    const t = this.#t(x)
    const handle = t.release()
    if (handle === null) return
    for (const scope of this.#scopes) scope.owned.delete(t)
    this.#check(this.#lib.dbc_tensor_free(handle))
  }

  scope<T>(fn: () => T): T {
    const frame = { owned: new Set<ShimTensor>(), kept: new Set<ShimTensor>() }
    this.#scopes.push(frame)
    let result: T
    try {
      result = fn()
    } catch (error) {
      this.#scopes.pop()
      for (const t of frame.owned) this.free(t)
      throw error
    }
    this.#scopes.pop()
    collectTensors(result, frame.kept)
    const parent = this.#scopes.at(-1)
    for (const t of frame.owned) {
      if (frame.kept.has(t)) parent?.owned.add(t)
      else this.free(t)
    }
    return result
  }

  keep<T extends Tensor>(x: T): T {
    const frame = this.#scopes.at(-1)
    if (frame) frame.kept.add(this.#t(x))
    return x
  }

  liveBytes(): number {
    return Number(this.#lib.dbc_live_bytes())
  }
}

/** Tensors reachable from a scope's result: the value itself, or inside arrays and plain objects. */
function collectTensors(value: unknown, into: Set<ShimTensor>, depth = 0): void {
  if (value instanceof ShimTensor) into.add(value)
  else if (depth > 4 || value === null || typeof value !== 'object') return
  else if (Array.isArray(value)) for (const v of value) collectTensors(v, into, depth + 1)
  else if (Object.getPrototypeOf(value) === Object.prototype)
    for (const v of Object.values(value)) collectTensors(v, into, depth + 1)
}
