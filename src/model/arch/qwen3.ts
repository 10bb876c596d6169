/** Qwen3 decoders: Llama's shape plus RMSNorm on q and k over head_dim before RoPE. Order as mlx-lm qwen3.py. */
import type { Backend, RopeOptions, Tensor } from '../../tensor/backend.ts'
import type { Architecture, LayerRange, StepRows } from '../architecture.ts'
import { DecoderModel, type AttentionLayer } from '../decoder.ts'
import { parseDecoderConfig, type DecoderConfig } from '../config.ts'
import { FusedLinear, Linear, RmsNorm } from '../layers.ts'
import type { Weights } from '../weights.ts'

export function parseConfig(raw: Record<string, unknown>): DecoderConfig {
  return parseDecoderConfig(raw, { tieWordEmbeddings: true, attentionBias: false })
}

class Attention implements AttentionLayer {
  readonly qkv: FusedLinear
  readonly o: Linear
  readonly qNorm: RmsNorm
  readonly kNorm: RmsNorm
  constructor(
    w: Weights,
    private readonly c: DecoderConfig,
    private readonly rope: RopeOptions,
    private readonly b: Backend,
  ) {
    const bias = c.attentionBias
    this.qkv = new FusedLinear(
      [
        w.linear('q_proj', c.numHeads * c.headDim, c.hiddenSize, { bias, shard: 'out' }),
        w.linear('k_proj', c.numKvHeads * c.headDim, c.hiddenSize, { bias, shard: 'out' }),
        w.linear('v_proj', c.numKvHeads * c.headDim, c.hiddenSize, { bias, shard: 'out' }),
      ],
      [c.numHeads * c.headDim, c.numKvHeads * c.headDim, c.numKvHeads * c.headDim],
      w,
      b,
    )
    this.o = new Linear(w.linear('o_proj', c.hiddenSize, c.numHeads * c.headDim, { bias, shard: 'in' }), b)
    this.qNorm = new RmsNorm(w, 'q_norm', c.headDim, c.rmsNormEps, b)
    this.kNorm = new RmsNorm(w, 'k_norm', c.headDim, c.rmsNormEps, b)
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const { b, c } = this
    const n = x.shape[0]!
    const [qx, kx, vx] = this.qkv.apply(x)
    const q = b.rope(this.qNorm.apply(b.reshape(qx!, [n, c.numHeads, c.headDim])), rows.positions, this.rope)
    const k = b.rope(this.kNorm.apply(b.reshape(kx!, [n, c.numKvHeads, c.headDim])), rows.positions, this.rope)
    const v = b.reshape(vx!, [n, c.numKvHeads, c.headDim])
    const out = rows.cache.attend(layer, q, k, v, rows.slots, rows.positions, { scale: c.headDim ** -0.5 })
    return this.o.apply(b.reshape(out, [n, c.numHeads * c.headDim]))
  }
}

export const createModel = (
  config: DecoderConfig,
  weights: Weights,
  range: LayerRange,
  backend: Backend,
): Architecture => new DecoderModel(config, weights, range, backend, (w, c, rope, b) => new Attention(w, c, rope, b))

/** Tensor parallel: q/k/v keep this rank's heads, o_proj their columns; the MLP splits as in layers.ts SwiGluMlp. */
export const tensorParallel = true
