/** The pre-norm decoder every family here shares (mlx-lm TransformerBlock / LlamaModel): a block is
 * `h = x + attn(norm(x)); out = h + mlp(norm(h))`, and the model embeds, runs its layer range, and applies the head.
 * A family supplies only its attention (and config); adding one touches no other. */
import type { Backend, RopeOptions, Tensor } from '../tensor/backend.ts'
import type { LayerRange, StepRows } from './architecture.ts'
import { LayerStack } from './layer-stack.ts'
import type { DecoderConfig } from './config.ts'
import { OutputHead, RmsNorm, SwiGluMlp } from './layers.ts'
import { ropeOptions } from './rope.ts'
import type { Weights } from './weights.ts'

export interface AttentionLayer {
  forward(x: Tensor, rows: StepRows, layer: number): Tensor
}

export type AttentionFactory = (
  w: Weights,
  config: DecoderConfig,
  rope: RopeOptions,
  backend: Backend,
) => AttentionLayer

class Block {
  readonly attention: AttentionLayer
  readonly mlp: SwiGluMlp
  readonly inputNorm: RmsNorm
  readonly postAttentionNorm: RmsNorm
  constructor(
    w: Weights,
    c: DecoderConfig,
    rope: RopeOptions,
    attention: AttentionFactory,
    private readonly b: Backend,
  ) {
    this.attention = attention(w.scope('self_attn'), c, rope, b)
    this.mlp = new SwiGluMlp(w.scope('mlp'), c, b)
    this.inputNorm = new RmsNorm(w, 'input_layernorm', c.hiddenSize, c.rmsNormEps, b)
    this.postAttentionNorm = new RmsNorm(w, 'post_attention_layernorm', c.hiddenSize, c.rmsNormEps, b)
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const h = this.b.add(x, this.attention.forward(this.inputNorm.apply(x), rows, layer))
    return this.b.add(h, this.mlp.forward(this.postAttentionNorm.apply(h)))
  }
}

export class DecoderModel extends LayerStack {
  readonly output?: OutputHead
  constructor(config: DecoderConfig, w: Weights, range: LayerRange, b: Backend, attention: AttentionFactory) {
    super(config, range, b, w.scope('model'))
    const rope = ropeOptions(config)
    for (let i = range.lo; i < range.hi; i++)
      this.layers.push(new Block(this.model.scope(`layers.${i}`), config, rope, attention, b))
    if (range.last) this.output = new OutputHead(w, this.model, config, b, () => this.sharedEmbedding())
  }
  head(hidden: Tensor, slice = false): Tensor {
    return this.output!.apply(hidden, !slice)
  }
  get headSplit(): boolean {
    return this.output?.split ?? false
  }
}
