/** Weights: strict, scoped lookup of checkpoint tensors. Every tensor a stage needs is claimed exactly once; tensors of the
 * stage's range that nobody claimed are an error (mlx-lm strict=True), so a renamed or missing key never goes unnoticed. */
import type { Backend, QuantizedMatrix, Tensor } from '../tensor/backend.ts'
import type { Checkpoint } from './checkpoint.ts'
import { CheckpointError } from './errors.ts'
import type { QuantizationConfig } from './quantization.ts'
import { tensorBytes } from './safetensors.ts'

/** What a parameter may be stored as: float weights (f32/f16/bf16), MLX-packed quantized words (u32) or mxfp4's E8M0
 * scales (u8). */
export type StorageKind = 'float' | 'packed' | 'e8m0'
const ALLOWED: Record<StorageKind, readonly string[]> = { float: ['f32', 'f16', 'bf16'], packed: ['u32'], e8m0: ['u8'] }

export type LinearWeight = { kind: 'dense'; weight: Tensor; bias?: Tensor } | { kind: 'quantized'; matrix: QuantizedMatrix; bias?: Tensor }

/** A stack of expert Linears [experts, out, in] (mlx-lm SwitchLinear), dense or quantized, with an optional bias [experts, out]. */
export type ExpertsWeight = { kind: 'dense'; weight: Tensor; bias?: Tensor } | { kind: 'quantized'; matrix: QuantizedMatrix; bias?: Tensor }

export class Weights {
  constructor(
    readonly checkpoint: Checkpoint,
    readonly backend: Backend,
    readonly quantization: QuantizationConfig,
    readonly prefix = '',
    readonly claimed = new Set<string>(),
    readonly loaded: Tensor[] = [],
  ) {}

  scope(name: string): Weights {
    return new Weights(this.checkpoint, this.backend, this.quantization, this.#path(name), this.claimed, this.loaded)
  }

  #path(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name
  }

  has(name: string): boolean {
    return this.checkpoint.tensors.has(this.#path(name))
  }

  /** Loads (memory-mapped, no copy on the cpu backend) and claims one tensor, checking its shape when given and its dtype. */
  tensor(name: string, shape?: readonly number[], kind: StorageKind = 'float'): Tensor {
    const path = this.#path(name)
    const entry = this.checkpoint.tensors.get(path)
    if (!entry) throw new CheckpointError('E_CKPT_TENSOR', `tensor ${path} is missing from ${this.checkpoint.dir}`, 'the checkpoint is incomplete or of another architecture')
    if (!ALLOWED[kind].includes(entry.dtype)) {
      throw new CheckpointError('E_CKPT_DTYPE', `tensor ${path} is ${entry.dtype}, expected ${ALLOWED[kind].join(' or ')}`, kind === 'float' ? 'a quantized layer needs its .scales and .biases (and a quantization entry in config.json)' : kind === 'e8m0' ? 'config.json says this layer is mxfp4, whose scales are u8 (E8M0)' : 'config.json says this layer is quantized but its weight is not packed u32')
    }
    if (shape && (shape.length !== entry.shape.length || shape.some((d, i) => d !== entry.shape[i]))) {
      throw new CheckpointError('E_CKPT_SHAPE', `tensor ${path} has shape [${entry.shape.join(', ')}], expected [${shape.join(', ')}]`, 'config.json does not match the weights')
    }
    if (this.claimed.has(path)) throw new CheckpointError('E_CKPT_CLAIM', `tensor ${path} claimed twice`)
    this.claimed.add(path)
    const tensor = this.backend.fromBytes(tensorBytes(entry), entry.shape, entry.dtype, { borrow: true })
    this.loaded.push(tensor)
    return tensor
  }

  /** A Linear of logical shape [outFeatures, inFeatures], dense or MLX-quantized (affine or mxfp4, per the config / `.scales`). */
  linear(name: string, outFeatures: number, inFeatures: number, options: { bias?: boolean } = {}): LinearWeight {
    return this.#quantizable(name, [outFeatures], inFeatures, [outFeatures], options.bias ?? false)
  }

  /** `experts` Linears [outFeatures, inFeatures] stacked on a leading axis, each with its bias row when `bias`. */
  experts(name: string, experts: number, outFeatures: number, inFeatures: number, options: { bias?: boolean } = {}): ExpertsWeight {
    return this.#quantizable(name, [experts, outFeatures], inFeatures, [experts, outFeatures], options.bias ?? false)
  }

  #quantizable(name: string, lead: number[], inFeatures: number, biasShape: number[], withBias: boolean): LinearWeight {
    const w = this.scope(name)
    const quant = this.quantization.forModule(this.#path(name), w.has('scales'))
    const bias = withBias ? w.tensor('bias', biasShape) : undefined
    if (!quant) return { kind: 'dense', weight: w.tensor('weight', [...lead, inFeatures]), bias }
    const { groupSize, bits, mode } = quant
    if ((inFeatures * bits) % 32 || inFeatures % groupSize) {
      throw new CheckpointError('E_CKPT_QUANT', `${this.#path(name)}: ${inFeatures} inputs do not pack at ${bits} bits, group ${groupSize}`)
    }
    const groups = [...lead, inFeatures / groupSize]
    const matrix: QuantizedMatrix = {
      weight: w.tensor('weight', [...lead, (inFeatures * bits) / 32], 'packed'),
      scales: w.tensor('scales', groups, mode === 'mxfp4' ? 'e8m0' : 'float'),
      biases: mode === 'mxfp4' ? undefined : w.tensor('biases', groups),
      groupSize,
      bits,
    }
    return { kind: 'quantized', matrix, bias }
  }

  /** Tensors under `prefixes` that were not claimed: a strict load fails on them. */
  unclaimed(prefixes: readonly string[]): string[] {
    const ignore = /rotary_emb\.inv_freq$/
    return [...this.checkpoint.tensors.keys()].filter(
      (name) => !this.claimed.has(name) && !ignore.test(name) && prefixes.some((p) => name === p || name.startsWith(`${p}.`)),
    )
  }
}

/** Applies a Linear: x [..., in] → [..., out]. */
export function applyLinear(backend: Backend, w: LinearWeight, x: Tensor, options: { precise?: boolean } = {}): Tensor {
  return w.kind === 'dense' ? backend.linear(x, w.weight, w.bias) : backend.quantizedLinear(x, w.matrix, w.bias, options)
}

/** Applies the experts each row picked: x [rows, in] or [rows, k, in], indices i32 [rows, k] → [rows, k, out]. */
export function applyExperts(backend: Backend, w: ExpertsWeight, x: Tensor, indices: Tensor): Tensor {
  return backend.gatherLinear(x, w.kind === 'dense' ? w.weight : w.matrix, indices, w.bias)
}
