/** Gemma 3 text decoders (model_type gemma3_text; gemma3 = the multimodal checkpoint, whose text tower sits under
 * `text_config` and `language_model.`, vision weights ignored). Order as mlx-lm gemma3_text.py:
 * - every `sliding_window_pattern`-th layer is global (full KV cache, rope_theta with rope_scaling); the others attend a
 *   sliding window of `sliding_window` keys (ring cache) with RoPE base rope_local_base_freq;
 * - RMSNorm scales by (1 + weight), computed in the weight's dtype as MLX does; four norms per block (the attention and MLP
 *   outputs are normed before the residual add); q/k norms over head_dim before RoPE;
 * - the embedding is multiplied by √hidden rounded to bf16 (and the product rounded to the embedding's dtype);
 * - GELU-tanh gated MLP; scores scaled by query_pre_attn_scalar^-½; lm_head tied unless the checkpoint has its own. */
import type { Backend, DType, RopeOptions, Tensor } from '../../tensor/backend.ts'
import type { Architecture, LayerRange, StepRows } from '../architecture.ts'
import { parseDecoderConfig, requireInt as positiveInt, type DecoderConfig } from '../config.ts'
import { CheckpointError } from '../errors.ts'
import type { LayerCacheSpec } from '../kv-cache.ts'
import { FusedLinear, Linear, OutputHead } from '../layers.ts'
import { LayerStack } from '../layer-stack.ts'
import { ropeOptions } from '../rope.ts'
import type { Weights } from '../weights.ts'

export interface Gemma3Config extends DecoderConfig {
  slidingWindow: number
  slidingWindowPattern: number
  ropeLocalBase: number
  queryPreAttnScalar: number
}

/** mlx-lm ModelArgs defaults for keys a config may leave out. */
const TEXT_DEFAULTS = {
  num_attention_heads: 4,
  head_dim: 256,
  num_key_value_heads: 1,
  vocab_size: 262144,
  rope_theta: 1_000_000,
  rope_local_base_freq: 10_000,
  query_pre_attn_scalar: 256,
  sliding_window: 512,
  sliding_window_pattern: 6,
  rms_norm_eps: 1e-6,
}

export const isSlidingLayer = (layer: number, pattern: number): boolean => (layer + 1) % pattern !== 0

export function parseConfig(raw: Record<string, unknown>): Gemma3Config {
  let text = raw
  let weightPrefix = ''
  if (raw.model_type === 'gemma3') {
    // multimodal wrapper (mlx-lm gemma3.py): the text config is nested, the vocabulary size lives at the top
    const nested = raw.text_config
    if (!nested || typeof nested !== 'object' || Array.isArray(nested)) {
      throw new CheckpointError(
        'E_CONFIG',
        "config.json: model_type 'gemma3' needs a 'text_config' object",
        "a text-only checkpoint says model_type 'gemma3_text'",
      )
    }
    text = {
      num_attention_heads: 8,
      num_key_value_heads: 4,
      ...(nested as Record<string, unknown>),
      vocab_size: raw.vocab_size ?? 262208,
      quantization: raw.quantization,
      quantization_config: raw.quantization_config,
      eos_token_id: (nested as Record<string, unknown>).eos_token_id ?? raw.eos_token_id,
    }
    weightPrefix = 'language_model.'
  }
  const merged: Record<string, unknown> = { ...TEXT_DEFAULTS }
  for (const [k, v] of Object.entries(text)) if (v !== undefined && v !== null) merged[k] = v
  // Gemma ties lm_head to the embedding unless told otherwise (mlx-lm ties when the checkpoint has no lm_head)
  const base = parseDecoderConfig(merged, { tieWordEmbeddings: true, attentionBias: false })
  const slidingWindow = positiveInt(merged, 'sliding_window')
  const slidingWindowPattern = positiveInt(merged, 'sliding_window_pattern')
  const queryPreAttnScalar = Number(merged.query_pre_attn_scalar)
  const ropeLocalBase = Number(merged.rope_local_base_freq)
  if (!(queryPreAttnScalar > 0) || !(ropeLocalBase > 0)) {
    throw new CheckpointError(
      'E_CONFIG',
      'config.json: query_pre_attn_scalar and rope_local_base_freq must be positive numbers',
    )
  }
  const layerCaches: LayerCacheSpec[] = Array.from({ length: base.numLayers }, (_, i) =>
    isSlidingLayer(i, slidingWindowPattern)
      ? { kind: 'window', kvHeads: base.numKvHeads, headDim: base.headDim, window: slidingWindow }
      : { kind: 'full', kvHeads: base.numKvHeads, headDim: base.headDim },
  )
  return {
    ...base,
    modelType: String(raw.model_type),
    slidingWindow,
    slidingWindowPattern,
    ropeLocalBase,
    queryPreAttnScalar,
    layerCaches,
    weightPrefix,
  }
}

/** Gemma's RMSNorm: x · rsqrt(mean(x²) + eps) · (1 + weight), with 1 + weight rounded to the weight's dtype (MLX adds in it). */
export class GemmaRmsNorm {
  readonly weight: Tensor
  constructor(
    w: Weights,
    name: string,
    size: number,
    private readonly eps: number,
    private readonly b: Backend,
  ) {
    const stored = w.tensor(`${name}.weight`, [size])
    const shifted = b.fromFloat32(
      b.toFloat32(stored).map((v) => v + 1),
      [size],
    )
    this.weight = stored.dtype === 'f32' ? shifted : b.astype(shifted, stored.dtype)
    if (this.weight !== shifted) b.free(shifted)
    w.loaded.push(this.weight)
  }
  apply(x: Tensor): Tensor {
    return this.b.rmsNorm(x, this.weight, this.eps)
  }
}

class Attention {
  readonly qkv: FusedLinear
  readonly o: Linear
  readonly qNorm: GemmaRmsNorm
  readonly kNorm: GemmaRmsNorm
  constructor(
    w: Weights,
    private readonly c: Gemma3Config,
    private readonly rope: RopeOptions,
    private readonly b: Backend,
  ) {
    const q = c.numHeads * c.headDim,
      kv = c.numKvHeads * c.headDim
    // tensor parallel: q/k/v keep this rank's heads, o_proj their columns (c holds this rank's head counts)
    this.qkv = new FusedLinear(
      [
        w.linear('q_proj', q, c.hiddenSize, { shard: 'out' }),
        w.linear('k_proj', kv, c.hiddenSize, { shard: 'out' }),
        w.linear('v_proj', kv, c.hiddenSize, { shard: 'out' }),
      ],
      [q, kv, kv],
      w,
      b,
    )
    this.o = new Linear(w.linear('o_proj', c.hiddenSize, q, { shard: 'in' }), b)
    this.qNorm = new GemmaRmsNorm(w, 'q_norm', c.headDim, c.rmsNormEps, b)
    this.kNorm = new GemmaRmsNorm(w, 'k_norm', c.headDim, c.rmsNormEps, b)
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const { b, c } = this
    const n = x.shape[0]!
    const [qx, kx, vx] = this.qkv.apply(x)
    const q = b.rope(this.qNorm.apply(b.reshape(qx!, [n, c.numHeads, c.headDim])), rows.positions, this.rope)
    const k = b.rope(this.kNorm.apply(b.reshape(kx!, [n, c.numKvHeads, c.headDim])), rows.positions, this.rope)
    const v = b.reshape(vx!, [n, c.numKvHeads, c.headDim])
    const out = rows.cache.attend(layer, q, k, v, rows.slots, rows.positions, { scale: c.queryPreAttnScalar ** -0.5 })
    return this.o.apply(b.reshape(out, [n, c.numHeads * c.headDim]))
  }
}

/** down(gelu_tanh(gate(x)) ⊙ up(x)) */
class GeluMlp {
  readonly gateUp: FusedLinear
  readonly down: Linear
  constructor(
    w: Weights,
    c: DecoderConfig,
    private readonly b: Backend,
  ) {
    const { intermediateSize: inter, hiddenSize: hidden } = c
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
    return this.down.apply(this.b.glu(gate!, up!, 'gelu_approx'))
  }
}

class Block {
  readonly attention: Attention
  readonly mlp: GeluMlp
  readonly norms: Record<'input' | 'postAttention' | 'preFeedforward' | 'postFeedforward', GemmaRmsNorm>
  constructor(
    w: Weights,
    c: Gemma3Config,
    rope: RopeOptions,
    private readonly b: Backend,
  ) {
    this.attention = new Attention(w.scope('self_attn'), c, rope, b)
    this.mlp = new GeluMlp(w.scope('mlp'), c, b)
    const norm = (name: string) => new GemmaRmsNorm(w, name, c.hiddenSize, c.rmsNormEps, b)
    this.norms = {
      input: norm('input_layernorm'),
      postAttention: norm('post_attention_layernorm'),
      preFeedforward: norm('pre_feedforward_layernorm'),
      postFeedforward: norm('post_feedforward_layernorm'),
    }
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const { b, norms } = this
    const h = b.add(x, norms.postAttention.apply(this.attention.forward(norms.input.apply(x), rows, layer)))
    return b.add(h, norms.postFeedforward.apply(this.mlp.forward(norms.preFeedforward.apply(h))))
  }
}

/** √hidden as MLX computes it: a bf16 scalar (Gemma's reference does the same). */
export function embeddingScale(hidden: number): number {
  const f = new Float32Array([Math.sqrt(hidden)])
  const u = new Uint32Array(f.buffer)
  u[0] = ((u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) >>> 16) << 16
  return f[0]!
}

class Gemma3Model extends LayerStack {
  declare readonly config: Gemma3Config
  readonly output?: OutputHead
  readonly #embedDtype: DType
  constructor(config: Gemma3Config, root: Weights, range: LayerRange, b: Backend) {
    const w = config.weightPrefix ? root.scope(config.weightPrefix.slice(0, -1)) : root
    super(config, range, b, w.scope('model'))
    const model = this.model
    const globalRope = ropeOptions(config)
    const localRope: RopeOptions = { dims: config.headDim, traditional: false, base: config.ropeLocalBase, scale: 1 }
    for (let i = range.lo; i < range.hi; i++) {
      const rope = isSlidingLayer(i, config.slidingWindowPattern) ? localRope : globalRope
      this.layers.push(new Block(model.scope(`layers.${i}`), config, rope, b))
    }
    // under tensor parallel the head is split by vocabulary as the Llama family's is (layers.ts OutputHead)
    if (range.last)
      this.output = new OutputHead(
        w,
        model,
        config,
        b,
        () => this.sharedEmbedding(),
        new GemmaRmsNorm(model, 'norm', config.hiddenSize, config.rmsNormEps, b),
      )
    const table = this.loadedEmbedding?.table
    this.#embedDtype = !table ? 'f32' : table.kind === 'dense' ? table.weight.dtype : table.matrix.scales.dtype
  }
  embed(tokens: Tensor): Tensor {
    const b = this.b
    const h = b.scale(this.embedding!.embed(tokens), embeddingScale(this.config.hiddenSize))
    // MLX multiplies in the embedding's dtype: round the product the same way
    return this.#embedDtype === 'f32' ? h : b.astype(b.astype(h, this.#embedDtype), 'f32')
  }
  head(hidden: Tensor, slice = false): Tensor {
    return this.output!.apply(hidden, !slice)
  }
  get headSplit(): boolean {
    return this.output?.split ?? false
  }
}

export const createModel = (
  config: Gemma3Config,
  weights: Weights,
  range: LayerRange,
  backend: Backend,
): Architecture => new Gemma3Model(config, weights, range, backend)

/** Tensor parallel: q/k/v keep this rank's heads (with their q/k norms, which work per head), o_proj their columns; the
 * GELU MLP splits as SwiGLU does. The norms around them see whole sums; lm_head splits by vocabulary (OutputHead). */
export const tensorParallel = true
