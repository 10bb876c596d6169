/** Shared pieces every decoder family uses (mlx-lm base.py / activations.py): RMSNorm, SwiGLU MLP, token embedding and head. */
import type { Backend, Tensor } from '../tensor/backend.ts'
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
  ) {}
  apply(x: Tensor): Tensor {
    return applyLinear(this.b, this.weight, x)
  }
}

/** down(silu(gate(x)) ⊙ up(x)) */
export class SwiGluMlp {
  readonly gate: Linear
  readonly up: Linear
  readonly down: Linear
  constructor(w: Weights, config: DecoderConfig, private readonly b: Backend) {
    this.gate = new Linear(w.linear('gate_proj', config.intermediateSize, config.hiddenSize), b)
    this.up = new Linear(w.linear('up_proj', config.intermediateSize, config.hiddenSize), b)
    this.down = new Linear(w.linear('down_proj', config.hiddenSize, config.intermediateSize), b)
  }
  forward(x: Tensor): Tensor {
    return this.down.apply(this.b.glu(this.gate.apply(x), this.up.apply(x), 'silu'))
  }
}

/** embed_tokens, shared by the first stage (gather) and, when tied, the last stage (lm_head). */
export class TokenEmbedding {
  readonly table: LinearWeight
  constructor(w: Weights, config: DecoderConfig, private readonly b: Backend) {
    this.table = w.linear('embed_tokens', config.vocabSize, config.hiddenSize)
  }
  embed(tokens: Tensor): Tensor {
    return this.table.kind === 'dense' ? this.b.embedding(this.table.weight, tokens) : this.b.quantizedEmbedding(this.table.matrix, tokens)
  }
  asLinear(): Linear {
    return new Linear(this.table, this.b)
  }
}

/** Final norm + lm_head (tied to the embedding or its own weight). */
export class OutputHead {
  readonly norm: RmsNorm
  readonly lmHead: Linear
  constructor(root: Weights, model: Weights, config: DecoderConfig, b: Backend, embedding: () => TokenEmbedding) {
    this.norm = new RmsNorm(model, 'norm', config.hiddenSize, config.rmsNormEps, b)
    this.lmHead = config.tieWordEmbeddings ? embedding().asLinear() : new Linear(root.linear('lm_head', config.vocabSize, config.hiddenSize), b)
  }
  apply(hidden: Tensor): Tensor {
    return this.lmHead.apply(this.norm.apply(hidden))
  }
}
