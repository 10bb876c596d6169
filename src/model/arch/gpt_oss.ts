/** GPT-OSS (model_type gpt_oss), in the MLX layout mlx-lm's gpt_oss.py sanitizes checkpoints into:
 * - attention with biases on q/k/v/o, per-head sink logits (`self_attn.sinks`) in the softmax, scale head_dim^-½, RoPE
 *   with yarn scaling (q and k also multiplied by yarn's magnitude factor);
 * - `layer_types` (default alternating sliding_attention / full_attention): sliding layers attend `sliding_window` (128)
 *   keys through a ring cache, full ones everything;
 * - a mixture of experts per layer: router Linear (with bias) → top-`num_experts_per_tok` of `num_local_experts`, softmax
 *   over those k logits, then each row's experts (gate/up/down stacks [E, out, in] with biases, dense, affine or mxfp4)
 *   through the clipped SwiGLU, summed with the softmax weights;
 * - pre-norm blocks with plain RMSNorm, an untied lm_head. */
import type { Backend, RopeOptions, Tensor } from '../../tensor/backend.ts'
import type { Architecture, LayerRange, StepRows } from '../architecture.ts'
import { parseDecoderConfig, requireInt as positiveInt, type DecoderConfig } from '../config.ts'
import { CheckpointError } from '../errors.ts'
import type { LayerCacheSpec } from '../kv-cache.ts'
import { FusedLinear, Linear, OutputHead, RmsNorm } from '../layers.ts'
import { LayerStack } from '../layer-stack.ts'
import { ropeMagnitude, ropeOptions } from '../rope.ts'
import { applyExperts, type ExpertsWeight, type Weights } from '../weights.ts'
import type { TensorParallel } from '../../tensor/tensor-parallel.ts'

export interface GptOssConfig extends DecoderConfig {
  numExperts: number
  expertsPerToken: number
  slidingWindow: number
  /** true where the layer is sliding_attention. */
  slidingLayers: boolean[]
}

/** mlx-lm ModelArgs defaults (gpt-oss-20b's shapes) for keys a config may leave out. */
const DEFAULTS = {
  num_hidden_layers: 36,
  num_local_experts: 128,
  num_experts_per_tok: 4,
  vocab_size: 201088,
  rms_norm_eps: 1e-5,
  hidden_size: 2880,
  intermediate_size: 2880,
  head_dim: 64,
  num_attention_heads: 64,
  num_key_value_heads: 8,
  sliding_window: 128,
  rope_theta: 150000,
}

export function parseConfig(raw: Record<string, unknown>): GptOssConfig {
  const merged: Record<string, unknown> = { ...DEFAULTS }
  for (const [k, v] of Object.entries(raw)) if (v !== undefined && v !== null) merged[k] = v
  const base = parseDecoderConfig(merged, { tieWordEmbeddings: false, attentionBias: true, allowYarn: true })
  const numExperts = positiveInt(merged, 'num_local_experts')
  const expertsPerToken = positiveInt(merged, 'num_experts_per_tok')
  if (expertsPerToken > numExperts)
    throw new CheckpointError(
      'E_CONFIG',
      `config.json: num_experts_per_tok ${expertsPerToken} exceeds num_local_experts ${numExperts}`,
    )
  const slidingWindow = positiveInt(merged, 'sliding_window')
  const types =
    merged.layer_types ??
    Array.from({ length: base.numLayers }, (_, i) => (i % 2 ? 'full_attention' : 'sliding_attention'))
  if (
    !Array.isArray(types) ||
    types.length !== base.numLayers ||
    types.some((t) => t !== 'sliding_attention' && t !== 'full_attention')
  ) {
    throw new CheckpointError(
      'E_CONFIG',
      `config.json: 'layer_types' must list sliding_attention or full_attention for each of the ${base.numLayers} layers`,
    )
  }
  const slidingLayers = types.map((t) => t === 'sliding_attention')
  const layerCaches: LayerCacheSpec[] = slidingLayers.map((sliding) =>
    sliding
      ? { kind: 'window', kvHeads: base.numKvHeads, headDim: base.headDim, window: slidingWindow }
      : { kind: 'full', kvHeads: base.numKvHeads, headDim: base.headDim },
  )
  return {
    ...base,
    numExperts,
    expertsPerToken,
    slidingWindow,
    slidingLayers,
    layerCaches,
    experts: { path: '.mlp.experts.', share: expertsPerToken / numExperts },
  }
}

class Attention {
  readonly qkv: FusedLinear
  readonly o: Linear
  readonly sinks: Tensor
  constructor(
    w: Weights,
    private readonly c: GptOssConfig,
    private readonly rope: RopeOptions,
    private readonly magnitude: number,
    private readonly b: Backend,
  ) {
    const q = c.numHeads * c.headDim,
      kv = c.numKvHeads * c.headDim
    const bias = c.attentionBias
    // tensor parallel: q/k/v keep this rank's heads (and their sinks), o_proj their columns (c holds this rank's counts)
    this.qkv = new FusedLinear(
      [
        w.linear('q_proj', q, c.hiddenSize, { bias, shard: 'out' }),
        w.linear('k_proj', kv, c.hiddenSize, { bias, shard: 'out' }),
        w.linear('v_proj', kv, c.hiddenSize, { bias, shard: 'out' }),
      ],
      [q, kv, kv],
      w,
      b,
    )
    this.o = new Linear(w.linear('o_proj', c.hiddenSize, q, { bias, shard: 'in' }), b)
    const stored = w.tensor(
      'sinks',
      [c.numHeads],
      'float',
      w.tp.size > 1 ? { axis: 0, rank: w.tp.rank, size: w.tp.size } : undefined,
    )
    this.sinks = stored.dtype === 'f32' ? stored : b.astype(stored, 'f32')
    if (this.sinks !== stored) w.loaded.push(this.sinks)
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const { b, c } = this
    const n = x.shape[0]!
    const [qx, kx, vx] = this.qkv.apply(x)
    const scaled = (t: Tensor) => (this.magnitude === 1 ? t : b.scale(t, this.magnitude))
    const q = b.rope(scaled(b.reshape(qx!, [n, c.numHeads, c.headDim])), rows.positions, this.rope)
    const k = b.rope(scaled(b.reshape(kx!, [n, c.numKvHeads, c.headDim])), rows.positions, this.rope)
    const v = b.reshape(vx!, [n, c.numKvHeads, c.headDim])
    const out = rows.cache.attend(layer, q, k, v, rows.slots, rows.positions, {
      scale: c.headDim ** -0.5,
      sinks: this.sinks,
    })
    return this.o.apply(b.reshape(out, [n, c.numHeads * c.headDim]))
  }
}

/** Router → top-k experts → softmax over their logits → clipped SwiGLU experts → weighted sum (mlx-lm MLPBlock). */
class MoeBlock {
  readonly router: Linear
  readonly gate: ExpertsWeight
  readonly up: ExpertsWeight
  readonly down: ExpertsWeight
  constructor(
    w: Weights,
    private readonly c: GptOssConfig,
    private readonly b: Backend,
  ) {
    const { numExperts: E, hiddenSize: hidden, intermediateSize: inter } = c
    // the router's logits pick experts, a discrete choice: keep its activations in float (see Backend.quantizedLinear)
    // so the cpu kernels' int8 rounding cannot flip a pick that MLX, in float, would not make
    this.router = new Linear(w.linear('router', E, hidden, { bias: true }), b, true)
    // tensor parallel: every expert keeps this rank's share of its width (gate/up rows, down columns); the router stays
    // whole, and its input is the same on every rank, so every rank picks the same experts
    const experts = w.scope('experts')
    this.gate = experts.experts('gate_proj', E, inter, hidden, { bias: true, shard: 'out' })
    this.up = experts.experts('up_proj', E, inter, hidden, { bias: true, shard: 'out' })
    this.down = experts.experts('down_proj', E, hidden, inter, { bias: true, shard: 'in' })
    this.tp = w.tp
  }
  readonly tp: TensorParallel
  forward(x: Tensor): Tensor {
    const b = this.b
    const { values, indices } = b.topk(this.router.apply(x), this.c.expertsPerToken)
    const weights = b.softmax(values)
    const act = b.glu(applyExperts(b, this.gate, x, indices), applyExperts(b, this.up, x, indices), 'swiglu_clipped')
    const out = b.weightedSum(applyExperts(b, this.down, act, indices), weights)
    return this.tp.size > 1 ? this.tp.allSum(out) : out
  }
}

class Block {
  readonly attention: Attention
  readonly mlp: MoeBlock
  readonly inputNorm: RmsNorm
  readonly postAttentionNorm: RmsNorm
  constructor(
    w: Weights,
    c: GptOssConfig,
    rope: RopeOptions,
    magnitude: number,
    private readonly b: Backend,
  ) {
    this.attention = new Attention(w.scope('self_attn'), c, rope, magnitude, b)
    this.mlp = new MoeBlock(w.scope('mlp'), c, b)
    this.inputNorm = new RmsNorm(w, 'input_layernorm', c.hiddenSize, c.rmsNormEps, b)
    this.postAttentionNorm = new RmsNorm(w, 'post_attention_layernorm', c.hiddenSize, c.rmsNormEps, b)
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const h = this.b.add(x, this.attention.forward(this.inputNorm.apply(x), rows, layer))
    return this.b.add(h, this.mlp.forward(this.postAttentionNorm.apply(h)))
  }
}

class GptOssModel extends LayerStack {
  readonly output?: OutputHead
  constructor(config: GptOssConfig, w: Weights, range: LayerRange, b: Backend) {
    super(config, range, b, w.scope('model'))
    const rope = ropeOptions(config)
    const magnitude = ropeMagnitude(config)
    for (let i = range.lo; i < range.hi; i++)
      this.layers.push(new Block(this.model.scope(`layers.${i}`), config, rope, magnitude, b))
    if (range.last) this.output = new OutputHead(w, this.model, config, b, () => this.sharedEmbedding())
  }
  head(hidden: Tensor, slice = false): Tensor {
    return this.output!.apply(hidden, !slice)
  }
  get headSplit(): boolean {
    return this.output?.split ?? false
  }
}

export const createModel = (
  config: GptOssConfig,
  weights: Weights,
  range: LayerRange,
  backend: Backend,
): Architecture => new GptOssModel(config, weights, range, backend)

/** Tensor parallel: attention split by heads (with their sinks) as for Llama; every expert of the mixture split by its
 * width, one all_sum after the weighted sum of the experts; lm_head split by vocabulary. */
export const tensorParallel = true
