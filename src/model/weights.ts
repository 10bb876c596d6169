/** Weights: strict, scoped lookup of checkpoint tensors. Every tensor a stage needs is claimed exactly once; tensors of the
 * stage's range that nobody claimed are an error (mlx-lm strict=True), so a renamed or missing key never goes unnoticed. */
import { DTYPE_BYTES, type Backend, type DType, type QuantizedMatrix, type Tensor } from '../tensor/backend.ts'
import { NO_TENSOR_PARALLEL, type TensorParallel } from '../tensor/tensor-parallel.ts'
import type { Checkpoint } from './checkpoint.ts'
import { CheckpointError } from './errors.ts'
import type { QuantizationConfig } from './quantization.ts'
import { tensorBytes } from './safetensors.ts'

/** What a parameter may be stored as: float weights (f32/f16/bf16), MLX-packed quantized words (u32) or mxfp4's E8M0
 * scales (u8). */
export type StorageKind = 'float' | 'packed' | 'e8m0'
const ALLOWED: Record<StorageKind, readonly string[]> = { float: ['f32', 'f16', 'bf16'], packed: ['u32'], e8m0: ['u8'] }

/** `allSum`: the weight holds this rank's input columns (tensor parallel, "sharded-to-all"): the partial outputs are summed
 * across ranks, then the bias is added once. */
export type LinearWeight = ({ kind: 'dense'; weight: Tensor } | { kind: 'quantized'; matrix: QuantizedMatrix }) & {
  bias?: Tensor
  allSum?: (x: Tensor) => Tensor
}

/** Tensor parallel (mlx-lm shard_linear): 'out' keeps this rank's output rows (q/k/v/gate/up, "all-to-sharded"), 'in'
 * its input columns (o/down, "sharded-to-all"). Sizes given to Weights.linear are this rank's; the checkpoint holds size×. */
export type ShardAxis = 'out' | 'in'

/** Which part of a tensor one rank loads: `axis` of the full tensor cut into `size` equal parts, part `rank`. With
 * `segments` (full lengths of consecutive blocks along `axis`, such as a fused q|k|v projection), each block is cut so,
 * and the rank's parts of the blocks are joined in order. */
export interface TensorShard {
  axis: number
  rank: number
  size: number
  segments?: readonly number[]
}

/** A stack of expert Linears [experts, out, in] (mlx-lm SwitchLinear), dense or quantized, with an optional bias [experts, out]. */
export type ExpertsWeight =
  { kind: 'dense'; weight: Tensor; bias?: Tensor } | { kind: 'quantized'; matrix: QuantizedMatrix; bias?: Tensor }

/** Where a model's weights come from. */
export interface WeightsSource {
  checkpoint: Checkpoint
  backend: Backend
  quantization: QuantizationConfig
  /** The tensor-parallel group whose shard this process loads (linears marked with `shard`). */
  tp?: TensorParallel
}

/** What every scope of one load shares: the tensors claimed and loaded, and the claimed tensors of which this rank holds
 * only a part (name → the number of parts). */
interface LoadState {
  claimed: Set<string>
  loaded: Tensor[]
  parts: Map<string, number>
}

export class Weights {
  readonly checkpoint: Checkpoint
  readonly backend: Backend
  readonly quantization: QuantizationConfig
  readonly tp: TensorParallel
  readonly claimed: Set<string>
  readonly loaded: Tensor[]
  readonly parts: Map<string, number>

  constructor(
    source: WeightsSource,
    readonly prefix = '',
    state: LoadState = { claimed: new Set(), loaded: [], parts: new Map() },
  ) {
    this.checkpoint = source.checkpoint
    this.backend = source.backend
    this.quantization = source.quantization
    this.tp = source.tp ?? NO_TENSOR_PARALLEL
    this.claimed = state.claimed
    this.loaded = state.loaded
    this.parts = state.parts
  }

  scope(name: string): Weights {
    return new Weights(this, this.#path(name), this)
  }

  #path(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name
  }

  has(name: string): boolean {
    return this.checkpoint.tensors.has(this.#path(name))
  }

  /** Loads (memory-mapped, no copy on the cpu backend) and claims one tensor, checking its shape when given and its dtype.
   * With `shard`, `shape` is this rank's part and the checkpoint must hold `size` parts along `axis`. */
  tensor(name: string, shape?: readonly number[], kind: StorageKind = 'float', shard?: TensorShard): Tensor {
    const path = this.#path(name)
    const entry = this.checkpoint.tensors.get(path)
    if (!entry)
      throw new CheckpointError(
        'E_CKPT_TENSOR',
        `tensor ${path} is missing from ${this.checkpoint.dir}`,
        'the checkpoint is incomplete or of another architecture',
      )
    if (!ALLOWED[kind].includes(entry.dtype)) {
      throw new CheckpointError(
        'E_CKPT_DTYPE',
        `tensor ${path} is ${entry.dtype}, expected ${ALLOWED[kind].join(' or ')}`,
        kind === 'float'
          ? 'a quantized layer needs its .scales and .biases (and a quantization entry in config.json)'
          : kind === 'e8m0'
            ? 'config.json says this layer is mxfp4, whose scales are u8 (E8M0)'
            : 'config.json says this layer is quantized but its weight is not packed u32',
      )
    }
    const full = shape && shard ? shape.map((d, i) => (i === shard.axis ? d * shard.size : d)) : shape
    if (full && (full.length !== entry.shape.length || full.some((d, i) => d !== entry.shape[i]))) {
      throw new CheckpointError(
        'E_CKPT_SHAPE',
        `tensor ${path} has shape [${entry.shape.join(', ')}], expected [${full.join(', ')}]`,
        'config.json does not match the weights',
      )
    }
    if (this.claimed.has(path)) throw new CheckpointError('E_CKPT_CLAIM', `tensor ${path} claimed twice`)
    this.claimed.add(path)
    if (shard && shard.size > 1) this.parts.set(path, shard.size)
    const tensor =
      shard && shard.size > 1
        ? this.backend.fromBytes(shardBytes(tensorBytes(entry), entry.shape, entry.dtype, shard), shape!, entry.dtype)
        : this.backend.fromBytes(tensorBytes(entry), entry.shape, entry.dtype, { borrow: true })
    this.loaded.push(tensor)
    return tensor
  }

  /** A Linear of logical shape [outFeatures, inFeatures], dense or MLX-quantized (affine or mxfp4, per the config / `.scales`). */
  /** `segments` (with shard 'out'): this rank's lengths of the blocks its output rows are made of, for a projection that
   * fuses several (each block is split across the ranks on its own). */
  linear(
    name: string,
    outFeatures: number,
    inFeatures: number,
    options: { bias?: boolean; shard?: ShardAxis; segments?: readonly number[] } = {},
  ): LinearWeight {
    const shard = this.tp.size > 1 ? options.shard : undefined
    const w = this.#quantizable(
      name,
      [outFeatures],
      inFeatures,
      [outFeatures],
      options.bias ?? false,
      shard,
      shard === 'out' ? options.segments : undefined,
    )
    return shard === 'in' ? { ...w, allSum: this.tp.allSum } : w
  }

  /** A stack of expert matrices [experts, out, in]. With `shard` (tensor parallel) every expert is split as `linear`
   * splits one; 'in' leaves the per-expert bias on rank 0 alone, since the caller sums the ranks' outputs after it. */
  experts(
    name: string,
    experts: number,
    outFeatures: number,
    inFeatures: number,
    options: { bias?: boolean; shard?: ShardAxis } = {},
  ): ExpertsWeight {
    const shard = this.tp.size > 1 ? options.shard : undefined
    const w = this.#quantizable(
      name,
      [experts, outFeatures],
      inFeatures,
      [experts, outFeatures],
      options.bias ?? false,
      shard,
    )
    return shard === 'in' && this.tp.rank > 0 ? { ...w, bias: undefined } : w
  }

  #quantizable(
    name: string,
    lead: number[],
    inFeatures: number,
    biasShape: number[],
    withBias: boolean,
    shardAxis?: ShardAxis,
    segments?: readonly number[],
  ): LinearWeight {
    const w = this.scope(name)
    const quant = this.quantization.forModule(this.#path(name), w.has('scales'))
    const { rank, size } = this.tp
    const blocks = segments?.map((n) => n * size)
    // out: rows of the weight, its scales and its bias; in: columns (packed words and groups), the bias stays whole
    const part = shardAxis
      ? { axis: shardAxis === 'out' ? lead.length - 1 : lead.length, rank, size, segments: blocks }
      : undefined
    const bias = withBias
      ? w.tensor(
          'bias',
          biasShape,
          'float',
          shardAxis === 'out' ? { axis: lead.length - 1, rank, size, segments: blocks } : undefined,
        )
      : undefined
    if (!quant) return { kind: 'dense', weight: w.tensor('weight', [...lead, inFeatures], 'float', part), bias }
    const { groupSize, bits, mode } = quant
    if ((inFeatures * bits) % 32 || inFeatures % groupSize) {
      const tp =
        shardAxis === 'in'
          ? ` (this rank's 1/${size} of the inputs: a tensor-parallel split must fall on group boundaries)`
          : ''
      throw new CheckpointError(
        'E_CKPT_QUANT',
        `${this.#path(name)}: ${inFeatures} inputs do not pack at ${bits} bits, group ${groupSize}${tp}`,
      )
    }
    const groups = [...lead, inFeatures / groupSize]
    const matrix: QuantizedMatrix = {
      weight: w.tensor('weight', [...lead, (inFeatures * bits) / 32], 'packed', part),
      scales: w.tensor('scales', groups, mode === 'mxfp4' ? 'e8m0' : 'float', part),
      biases: mode === 'mxfp4' ? undefined : w.tensor('biases', groups, 'float', part),
      groupSize,
      bits,
    }
    return { kind: 'quantized', matrix, bias }
  }

  /** Tensors under `prefixes` that were not claimed: a strict load fails on them. */
  unclaimed(prefixes: readonly string[]): string[] {
    const ignore = /rotary_emb\.inv_freq$/
    return [...this.checkpoint.tensors.keys()].filter(
      (name) =>
        !this.claimed.has(name) && !ignore.test(name) && prefixes.some((p) => name === p || name.startsWith(`${p}.`)),
    )
  }
}

/** Applies a Linear: x [..., in] → [..., out]. A sharded-to-all weight sums its partial outputs first, then adds the bias. */
export function applyLinear(backend: Backend, w: LinearWeight, x: Tensor, options: { precise?: boolean } = {}): Tensor {
  const bias = w.allSum ? undefined : w.bias
  const y = w.kind === 'dense' ? backend.linear(x, w.weight, bias) : backend.quantizedLinear(x, w.matrix, bias, options)
  if (!w.allSum) return y
  const sum = w.allSum(y)
  return w.bias ? backend.add(sum, w.bias) : sum
}

/** This rank's part of a row-major tensor: a contiguous range when the cut is on the leading axis, else one strided copy. */
function shardBytes(bytes: Uint8Array, shape: readonly number[], dtype: DType, s: TensorShard): Uint8Array {
  const axis = shape[s.axis]!
  const blocks = s.segments ?? [axis]
  if (blocks.reduce((a, n) => a + n, 0) !== axis)
    throw new CheckpointError(
      'E_TP_SHARD',
      `blocks of ${blocks.join(' + ')} do not make an axis of ${axis}`,
      'config.json does not match the weights',
    )
  for (const n of blocks)
    if (n % s.size)
      throw new CheckpointError(
        'E_TP_SHARD',
        `an axis of ${n} does not split into ${s.size} equal parts`,
        'choose a --tp that divides the heads and the MLP width',
      )
  const inner = shape.slice(s.axis + 1).reduce((a, d) => a * d, 1) * DTYPE_BYTES[dtype]
  const outer = shape.slice(0, s.axis).reduce((a, d) => a * d, 1)
  // this rank's byte ranges within one outer row: its part of every block
  const ranges: [number, number][] = []
  let at = 0
  for (const n of blocks) {
    const part = (n / s.size) * inner
    ranges.push([at + s.rank * part, at + (s.rank + 1) * part])
    at += n * inner
  }
  const row = axis * inner
  if (outer === 1 && ranges.length === 1) return bytes.subarray(ranges[0]![0], ranges[0]![1])
  const span = ranges.reduce((a, [b, e]) => a + e - b, 0)
  const out = new Uint8Array(outer * span)
  let to = 0
  for (let i = 0; i < outer; i++)
    for (const [b, e] of ranges) (out.set(bytes.subarray(i * row + b, i * row + e), to), (to += e - b))
  return out
}

/** Applies the experts each row picked: x [rows, in] or [rows, k, in], indices i32 [rows, k] → [rows, k, out]. */
export function applyExperts(backend: Backend, w: ExpertsWeight, x: Tensor, indices: Tensor): Tensor {
  return backend.gatherLinear(x, w.kind === 'dense' ? w.weight : w.matrix, indices, w.bias)
}
