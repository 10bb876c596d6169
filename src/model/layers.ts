/** Shared pieces every decoder family uses (mlx-lm base.py / activations.py): RMSNorm, SwiGLU MLP, token embedding and head. */
import type { Backend, QuantizedMatrix, Tensor } from '../tensor/backend.ts'
import type { DecoderConfig } from './config.ts'
import { applyLinear, type LinearWeight, type Weights } from './weights.ts'

export class RmsNorm {
  readonly weight: Tensor
  constructor(
    w: Weights,
    name: string,
    size: number,
    private readonly eps: number,
    private readonly b: Backend,
  ) {
    this.weight = w.tensor(`${name}.weight`, [size])
  }
  apply(x: Tensor): Tensor {
    return this.b.rmsNorm(x, this.weight, this.eps)
  }
}

export class Linear {
  constructor(
    readonly weight: LinearWeight,
    private readonly b: Backend,
    /** Keep activations in float on quantized weights (see Backend.quantizedLinear). */
    private readonly precise = false,
  ) {
    // at load time, not on the first request
    if (weight.kind === 'quantized' && !precise) b.prepareQuantized(weight.matrix)
  }
  apply(x: Tensor): Tensor {
    return applyLinear(this.b, this.weight, x, { precise: this.precise })
  }
}

/** Linears that read the same input (q/k/v, gate/up), stacked row-wise into one matrix at load time so one call
 * streams all their weights: small projections alone reach a smaller share of memory bandwidth and pay a launch each.
 * Parts that cannot stack (different dtype, bits or bias) stay separate, and so do quantized parts whose kernel keeps
 * a copy of its own (Backend.prepareQuantized). Results equal the separate calls. */
export class FusedLinear {
  readonly #fused: Linear | null
  readonly #parts: Linear[]
  readonly #sizes: number[]

  constructor(
    parts: LinearWeight[],
    sizes: number[],
    w: Weights,
    private readonly b: Backend,
    precise = false,
  ) {
    this.#sizes = sizes
    // where the kernel keeps its own copy of each quantized part, that copy is what a call streams: a stacked copy
    // besides it would only hold memory
    if (!canStack(parts) || (!precise && parts.every((p) => p.kind === 'quantized' && b.prepareQuantized(p.matrix)))) {
      this.#fused = null
      this.#parts = parts.map((p) => new Linear(p, b, precise))
      return
    }
    this.#fused = new Linear(stack(parts, b, w), b, precise)
    this.#parts = []
    // the stacked copy replaces the parts (on mlx they are copies too, so keeping them would double the memory)
    for (const p of parts) {
      const tensors =
        p.kind === 'dense' ? [p.weight, p.bias] : [p.matrix.weight, p.matrix.scales, p.matrix.biases, p.bias]
      for (const t of tensors) {
        if (!t) continue
        w.loaded.splice(w.loaded.indexOf(t), 1)
        b.free(t)
      }
    }
  }

  apply(x: Tensor): Tensor[] {
    if (!this.#fused) return this.#parts.map((p) => p.apply(x))
    const y = this.#fused.apply(x)
    const axis = y.shape.length - 1
    let offset = 0
    return this.#sizes.map((size) => this.b.slice(y, axis, offset, (offset += size)))
  }
}

function canStack(parts: LinearWeight[]): boolean {
  const [first, ...rest] = parts
  // a sharded-to-all part sums across ranks on its own
  if (!first || parts.some((p) => p.allSum)) return false
  return rest.every((p) => {
    if (p.kind !== first.kind || Boolean(p.bias) !== Boolean(first.bias)) return false
    if (p.kind === 'dense' && first.kind === 'dense') return p.weight.dtype === first.weight.dtype
    if (p.kind === 'quantized' && first.kind === 'quantized') {
      return (
        p.matrix.bits === first.matrix.bits &&
        p.matrix.groupSize === first.matrix.groupSize &&
        p.matrix.scales.dtype === first.matrix.scales.dtype &&
        Boolean(p.matrix.biases) === Boolean(first.matrix.biases)
      )
    }
    return false
  })
}

function stack(parts: LinearWeight[], b: Backend, w: Weights): LinearWeight {
  const cat = (tensors: Tensor[]) => {
    const joined = tensors.slice(1).reduce((acc, t) => {
      const next = b.concat(acc, t, 0)
      if (acc !== tensors[0]) b.free(acc)
      return next
    }, tensors[0]!)
    w.loaded.push(joined)
    return joined
  }
  const bias = parts[0]!.bias ? cat(parts.map((p) => p.bias!)) : undefined
  if (parts[0]!.kind === 'dense')
    return { kind: 'dense', weight: cat(parts.map((p) => (p as { weight: Tensor }).weight)), bias }
  const m = parts.map((p) => (p as { matrix: QuantizedMatrix }).matrix)
  return {
    kind: 'quantized',
    matrix: {
      weight: cat(m.map((q) => q.weight)),
      scales: cat(m.map((q) => q.scales)),
      biases: m[0]!.biases ? cat(m.map((q) => q.biases!)) : undefined,
      groupSize: m[0]!.groupSize,
      bits: m[0]!.bits,
    },
    bias,
  }
}

/** down(silu(gate(x)) ⊙ up(x)), gate and up in one launch */
export class SwiGluMlp {
  readonly gateUp: FusedLinear
  readonly down: Linear
  constructor(
    w: Weights,
    config: DecoderConfig,
    private readonly b: Backend,
  ) {
    const { intermediateSize: inter, hiddenSize: hidden } = config
    // tensor parallel: gate/up keep this rank's rows, down its columns (one all_sum per MLP)
    this.gateUp = new FusedLinear(
      [w.linear('gate_proj', inter, hidden, { shard: 'out' }), w.linear('up_proj', inter, hidden, { shard: 'out' })],
      [inter, inter],
      w,
      b,
    )
    this.down = new Linear(w.linear('down_proj', hidden, inter, { shard: 'in' }), b)
  }
  forward(x: Tensor): Tensor {
    const [gate, up] = this.gateUp.apply(x)
    return this.down.apply(this.b.glu(gate!, up!, 'silu'))
  }
}

/** embed_tokens, shared by the first stage (gather) and, when tied, the last stage (lm_head). */
export class TokenEmbedding {
  readonly table: LinearWeight
  constructor(
    w: Weights,
    config: DecoderConfig,
    private readonly b: Backend,
  ) {
    this.table = w.linear('embed_tokens', config.vocabSize, config.hiddenSize)
  }
  embed(tokens: Tensor): Tensor {
    return this.table.kind === 'dense'
      ? this.b.embedding(this.table.weight, tokens)
      : this.b.quantizedEmbedding(this.table.matrix, tokens)
  }
  asLinear(): Linear {
    return new Linear(this.table, this.b)
  }
}

/** Final norm + lm_head (tied to the embedding or its own weight). Under tensor parallel, where the group can gather,
 * each rank holds 1/N of the vocabulary's rows and the logits meet on rank 0 (a whole head on every rank would be the
 * largest matmul of a small model's step, done N times over). */
export class OutputHead {
  readonly norm: { apply(x: Tensor): Tensor }
  readonly lmHead: Linear
  readonly #gather?: (x: Tensor) => Tensor
  /** `norm`: the family's final norm, where it is not the plain RMSNorm of `model.norm` (Gemma's). */
  constructor(
    root: Weights,
    model: Weights,
    config: DecoderConfig,
    b: Backend,
    embedding: () => TokenEmbedding,
    norm?: { apply(x: Tensor): Tensor },
  ) {
    this.norm = norm ?? new RmsNorm(model, 'norm', config.hiddenSize, config.rmsNormEps, b)
    const { tp } = root
    const split = tp.size > 1 && tp.gatherLast !== undefined && config.vocabSize % tp.size === 0
    if (split) this.#gather = (x) => tp.gatherLast!(x)
    if (!config.tieWordEmbeddings) {
      // sizes given to a sharded linear are this rank's
      this.lmHead = new Linear(
        root.linear('lm_head', split ? config.vocabSize / tp.size : config.vocabSize, config.hiddenSize, {
          shard: split ? 'out' : undefined,
        }),
        b,
      )
    } else {
      // the embedding stays whole (every rank looks tokens up); the head takes this rank's rows of it
      const table = embedding().table
      const rows = config.vocabSize / tp.size
      this.lmHead = split
        ? new Linear(rowsOf(table, tp.rank * rows, (tp.rank + 1) * rows, b, root), b)
        : new Linear(table, b)
    }
  }
  get split(): boolean {
    return this.#gather !== undefined
  }
  /** `gather` false: a split head's logits stay this rank's slice of the vocabulary (split sampling merges them). */
  apply(hidden: Tensor, gather = true): Tensor {
    const logits = this.lmHead.apply(this.norm.apply(hidden))
    return this.#gather && gather ? this.#gather(logits) : logits
  }
}

/** Rows [lo, hi) of a Linear's output (its weight, scales and biases), as tensors of their own held by `w`. */
function rowsOf(table: LinearWeight, lo: number, hi: number, b: Backend, w: Weights): LinearWeight {
  const cut = (t: Tensor) => {
    const part = b.slice(t, 0, lo, hi)
    w.loaded.push(part)
    return part
  }
  if (table.kind === 'dense') return { kind: 'dense', weight: cut(table.weight), bias: table.bias && cut(table.bias) }
  const m = table.matrix
  return {
    kind: 'quantized',
    matrix: { ...m, weight: cut(m.weight), scales: cut(m.scales), biases: m.biases && cut(m.biases) },
    bias: table.bias && cut(table.bias),
  }
}
