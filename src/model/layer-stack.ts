/** What every architecture's stage shares: the embedding table (loaded once, whether the first stage embeds with it or
 * the last stage's tied head reads it), its decoder layers run in order each in its own scope, and the embed/head seam.
 * A family file builds its layers and says how its head (and, where it differs, its embedding) works. */
import type { Backend, Tensor } from '../tensor/backend.ts'
import type { Architecture, LayerRange, StepRows } from './architecture.ts'
import type { DecoderConfig } from './config.ts'
import { TokenEmbedding } from './layers.ts'
import type { Weights } from './weights.ts'

export interface StackLayer {
  forward(hidden: Tensor, rows: StepRows, index: number): Tensor
}

export abstract class LayerStack implements Architecture {
  readonly layers: StackLayer[] = []
  /** Set on the first stage. */
  readonly embedding?: TokenEmbedding
  #table?: TokenEmbedding

  protected constructor(
    readonly config: DecoderConfig,
    readonly range: LayerRange,
    protected readonly b: Backend,
    /** The checkpoint's `model.` scope (embed_tokens, layers.N, norm). */
    protected readonly model: Weights,
  ) {
    if (range.first) this.embedding = this.sharedEmbedding()
  }

  /** The embedding table, loaded on first use and shared (a tied lm_head reads the same weights). */
  protected sharedEmbedding(): TokenEmbedding {
    return (this.#table ??= new TokenEmbedding(this.model, this.config, this.b))
  }

  /** The table if this stage loaded it (first stage, or a tied head on the last). */
  protected get loadedEmbedding(): TokenEmbedding | undefined {
    return this.#table
  }

  embed(tokens: Tensor): Tensor {
    return this.embedding!.embed(tokens)
  }

  forwardLayers(hidden: Tensor, rows: StepRows): Tensor {
    let h = hidden
    for (const [i, layer] of this.layers.entries()) h = this.b.scope(() => layer.forward(h, rows, i))
    return h
  }

  abstract head(hidden: Tensor, slice?: boolean): Tensor
}
