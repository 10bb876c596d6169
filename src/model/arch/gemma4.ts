/** Gemma 4 text decoders (model_type gemma4_text; gemma4 = the multimodal checkpoint, text config under `text_config`,
 * tensors under `language_model.`, vision/audio tensors ignored). Order as mlx-lm gemma4_text.py:
 * - `layer_types` (default: sliding_window_pattern − 1 sliding layers, then a full one): sliding layers attend
 *   `sliding_window` keys (ring cache) with default RoPE; full layers use `global_head_dim` and "proportional" RoPE
 *   (only the first head_dim × partial_rotary_factor dims turn, at frequencies of the whole head_dim);
 * - q/k RMSNorm, values RMS-normalised without a weight, scores unscaled (scale 1); with `attention_k_eq_v` a full layer
 *   has no v_proj: its values are its keys before k_norm and RoPE (`num_global_key_value_heads` heads);
 * - four norms per block, a GeGLU MLP, and with `enable_moe_block` a routed GeGLU expert block beside it (router: RMS
 *   norm × scale/√hidden → top-k → softmax × per_expert_scale), each branch normed before they are summed;
 *   `layer_scalar` multiplies the block output;
 * - embedding × √hidden in the embedding's dtype, final logits soft-capped: tanh(x / cap) · cap; tied head by default.
 * Not supported yet (refused): KV-shared layers (num_kv_shared_layers > 0) and per-layer inputs
 * (hidden_size_per_layer_input > 0), the small E2B/E4B models' features, which tie layers across pipeline stages. */
import type { Backend, DType, RopeOptions, Tensor } from '../../tensor/backend.ts'
import type { Architecture, LayerRange, StepRows } from '../architecture.ts'
import { parseDecoderConfig, requireInt as positiveInt, type DecoderConfig } from '../config.ts'
import { CheckpointError } from '../errors.ts'
import type { LayerCacheSpec } from '../kv-cache.ts'
import { FusedLinear, Linear, OutputHead, RmsNorm } from '../layers.ts'
import { LayerStack } from '../layer-stack.ts'
import { applyExperts, type ExpertsWeight, type Weights } from '../weights.ts'
import type { TensorParallel } from '../../tensor/tensor-parallel.ts'

interface RopeParams {
  theta: number
  /** proportional: rotated share of head_dim; default: every dim turns. */
  partial: number
  proportional: boolean
  factor: number
}

export interface Gemma4Config extends DecoderConfig {
  slidingWindow: number
  /** true where the layer is sliding_attention. */
  slidingLayers: boolean[]
  globalHeadDim: number
  globalKvHeads: number
  kEqV: boolean
  finalLogitSoftcap: number | null
  moe: { experts: number; topK: number; intermediate: number } | null
  rope: { sliding: RopeParams; full: RopeParams }
}

const TEXT_DEFAULTS = {
  hidden_size: 1536,
  num_hidden_layers: 35,
  intermediate_size: 6144,
  num_attention_heads: 8,
  head_dim: 256,
  global_head_dim: 512,
  rms_norm_eps: 1e-6,
  vocab_size: 262144,
  num_key_value_heads: 1,
  num_kv_shared_layers: 20,
  hidden_size_per_layer_input: 256,
  sliding_window: 512,
  sliding_window_pattern: 5,
  final_logit_softcapping: 30.0,
  tie_word_embeddings: true,
}

function ropeParams(raw: unknown, fallback: RopeParams): RopeParams {
  if (!raw || typeof raw !== 'object') return fallback
  const r = raw as Record<string, unknown>
  const type = String(r.rope_type ?? r.type ?? 'default')
  if (type !== 'default' && type !== 'proportional')
    throw new CheckpointError(
      'E_CONFIG',
      `rope_parameters type '${type}' is not supported`,
      'supported: default, proportional',
    )
  return {
    theta: Number(r.rope_theta ?? 10000),
    partial: Number(r.partial_rotary_factor ?? 1),
    proportional: type === 'proportional',
    factor: Number(r.factor ?? 1),
  }
}

export function parseConfig(raw: Record<string, unknown>): Gemma4Config {
  let text = raw
  let weightPrefix = ''
  if (raw.model_type === 'gemma4') {
    const nested = raw.text_config
    if (!nested || typeof nested !== 'object' || Array.isArray(nested)) {
      throw new CheckpointError(
        'E_CONFIG',
        "config.json: model_type 'gemma4' needs a 'text_config' object",
        "a text-only checkpoint says model_type 'gemma4_text'",
      )
    }
    text = {
      num_attention_heads: 8,
      num_key_value_heads: 1,
      ...(nested as Record<string, unknown>),
      vocab_size: raw.vocab_size ?? 262144,
    }
    for (const key of ['quantization', 'quantization_config', 'eos_token_id'] as const)
      if (raw[key] !== undefined) text[key] ??= raw[key]
    weightPrefix = 'language_model.'
  }
  const merged: Record<string, unknown> = { ...TEXT_DEFAULTS }
  for (const [k, v] of Object.entries(text)) if (v !== undefined && v !== null) merged[k] = v
  if (Number(merged.num_kv_shared_layers) > 0 || Number(merged.hidden_size_per_layer_input) > 0) {
    throw new CheckpointError(
      'E_MODEL_TYPE',
      'Gemma 4 with KV-shared layers or per-layer inputs (num_kv_shared_layers / hidden_size_per_layer_input > 0, the E2B/E4B models) is not supported yet',
      'the Gemma 4 models without them (26B, 31B) load',
    )
  }
  const base = parseDecoderConfig(merged, { tieWordEmbeddings: true, attentionBias: false })
  const slidingWindow = positiveInt(merged, 'sliding_window')
  const pattern = positiveInt(merged, 'sliding_window_pattern')
  const types =
    merged.layer_types ??
    Array.from({ length: base.numLayers }, (_, i) => ((i + 1) % pattern === 0 ? 'full_attention' : 'sliding_attention'))
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
  const globalHeadDim = Number(merged.global_head_dim) > 0 ? positiveInt(merged, 'global_head_dim') : base.headDim
  const kEqV = Boolean(merged.attention_k_eq_v ?? false)
  const globalKvHeads =
    kEqV && merged.num_global_key_value_heads != null
      ? positiveInt(merged, 'num_global_key_value_heads')
      : base.numKvHeads
  const moe = merged.enable_moe_block
    ? {
        experts: positiveInt(merged, 'num_experts'),
        topK: positiveInt(merged, 'top_k_experts'),
        intermediate: positiveInt(merged, 'moe_intermediate_size'),
      }
    : null
  if (moe && moe.topK > moe.experts)
    throw new CheckpointError('E_CONFIG', `config.json: top_k_experts ${moe.topK} exceeds num_experts ${moe.experts}`)
  const rp = (merged.rope_parameters ?? {}) as Record<string, unknown>
  const rope = {
    sliding: ropeParams(rp.sliding_attention, { theta: 10000, partial: 1, proportional: false, factor: 1 }),
    full: ropeParams(rp.full_attention, { theta: 1_000_000, partial: 0.25, proportional: true, factor: 1 }),
  }
  const softcap = merged.final_logit_softcapping
  const layerCaches: LayerCacheSpec[] = slidingLayers.map((sliding) =>
    sliding
      ? { kind: 'window', kvHeads: base.numKvHeads, headDim: base.headDim, window: slidingWindow }
      : { kind: 'full', kvHeads: globalKvHeads, headDim: globalHeadDim },
  )
  return {
    ...base,
    modelType: String(raw.model_type),
    slidingWindow,
    slidingLayers,
    globalHeadDim,
    globalKvHeads,
    kEqV,
    finalLogitSoftcap: typeof softcap === 'number' && softcap > 0 ? softcap : null,
    moe,
    rope,
    layerCaches,
    weightPrefix,
    ...(moe ? { experts: { path: '.experts.switch_glu.', share: moe.topK / moe.experts } } : {}),
  }
}

/** RoPE over a head: default turns every dim; proportional (mlx-lm ProportionalRoPE) turns only the first
 * head_dim × partial dims, pairing (i, i + head_dim/2) at periods factor·θ^(2i/head_dim), the rest left still. */
function ropeFor(p: RopeParams, headDim: number): RopeOptions {
  if (!p.proportional) return { dims: headDim, traditional: false, base: p.theta, scale: 1 }
  const rotated = Math.trunc(headDim * p.partial)
  const freqs = new Float32Array(headDim / 2).fill(Infinity)
  for (let i = 0; i < rotated / 2; i++) freqs[i] = p.factor * p.theta ** ((2 * i) / headDim)
  return { dims: headDim, traditional: false, base: p.theta, scale: 1, freqs }
}

/** A tensor of ones, for RMS norms without a learned scale. */
function ones(b: Backend, w: Weights, size: number): Tensor {
  const t = b.fromFloat32(new Float32Array(size).fill(1), [size])
  w.loaded.push(t)
  return t
}

class Attention {
  readonly headDim: number
  readonly kvHeads: number
  readonly qkv: FusedLinear
  readonly o: Linear
  readonly qNorm: RmsNorm
  readonly kNorm: RmsNorm
  readonly #valueScale: Tensor
  readonly #kEqV: boolean
  constructor(
    w: Weights,
    private readonly c: Gemma4Config,
    private readonly sliding: boolean,
    private readonly rope: RopeOptions,
    private readonly b: Backend,
  ) {
    this.headDim = sliding ? c.headDim : c.globalHeadDim
    this.kvHeads = sliding ? c.numKvHeads : c.globalKvHeads
    this.#kEqV = c.kEqV && !sliding
    const q = c.numHeads * this.headDim,
      kv = this.kvHeads * this.headDim
    // tensor parallel: q/k/v keep this rank's heads, o_proj their columns (c holds this rank's head counts)
    const parts = [
      w.linear('q_proj', q, c.hiddenSize, { shard: 'out' }),
      w.linear('k_proj', kv, c.hiddenSize, { shard: 'out' }),
    ]
    if (!this.#kEqV) parts.push(w.linear('v_proj', kv, c.hiddenSize, { shard: 'out' }))
    this.qkv = new FusedLinear(parts, this.#kEqV ? [q, kv] : [q, kv, kv], w, b)
    this.o = new Linear(w.linear('o_proj', c.hiddenSize, q, { shard: 'in' }), b)
    this.qNorm = new RmsNorm(w, 'q_norm', this.headDim, c.rmsNormEps, b)
    this.kNorm = new RmsNorm(w, 'k_norm', this.headDim, c.rmsNormEps, b)
    this.#valueScale = ones(b, w, this.headDim)
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const { b, c } = this
    const n = x.shape[0]!,
      D = this.headDim
    const [qx, kx, vx] = this.qkv.apply(x)
    const q = b.rope(this.qNorm.apply(b.reshape(qx!, [n, c.numHeads, D])), rows.positions, this.rope)
    const rawK = b.reshape(kx!, [n, this.kvHeads, D])
    const k = b.rope(this.kNorm.apply(rawK), rows.positions, this.rope)
    // k_eq_v: the values are the keys as projected, before k_norm and RoPE
    const v = b.rmsNorm(this.#kEqV ? rawK : b.reshape(vx!, [n, this.kvHeads, D]), this.#valueScale, c.rmsNormEps)
    const out = rows.cache.attend(layer, q, k, v, rows.slots, rows.positions, { scale: 1 })
    return this.o.apply(b.reshape(out, [n, c.numHeads * D]))
  }
}

/** down(gelu_tanh(gate(x)) ⊙ up(x)) */
class GeGluMlp {
  readonly gateUp: FusedLinear
  readonly down: Linear
  constructor(
    w: Weights,
    hidden: number,
    inter: number,
    private readonly b: Backend,
  ) {
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

/** Routed GeGLU experts (mlx-lm Router + Experts). */
class MoeBlock {
  readonly proj: Linear
  readonly routerNorm: Tensor
  readonly perExpertScale: Tensor
  readonly gate: ExpertsWeight
  readonly up: ExpertsWeight
  readonly down: ExpertsWeight
  constructor(
    w: Weights,
    private readonly c: Gemma4Config,
    private readonly b: Backend,
  ) {
    const { experts: E, intermediate: inter } = c.moe!
    const hidden = c.hiddenSize
    const router = w.scope('router')
    this.proj = new Linear(router.linear('proj', E, hidden), b)
    // the router's norm weight is scale · hidden^-½, multiplied in the scale's dtype as MLX does
    const scale = router.tensor('scale', [hidden])
    const product = b.fromFloat32(
      b.toFloat32(scale).map((v) => v * hidden ** -0.5),
      [hidden],
    )
    this.routerNorm = scale.dtype === 'f32' ? product : b.astype(product, scale.dtype)
    if (this.routerNorm !== product) b.free(product)
    w.loaded.push(this.routerNorm)
    const perExpert = router.tensor('per_expert_scale', [E])
    this.perExpertScale = b.reshape(perExpert, [E, 1])
    w.loaded.push(this.perExpertScale)
    // tensor parallel: every expert keeps this rank's share of its width; the router stays whole and sees the same input
    // on every rank, so every rank picks the same experts
    const experts = w.scope('experts').scope('switch_glu')
    this.gate = experts.experts('gate_proj', E, inter, hidden, { shard: 'out' })
    this.up = experts.experts('up_proj', E, inter, hidden, { shard: 'out' })
    this.down = experts.experts('down_proj', E, hidden, inter, { shard: 'in' })
    this.tp = w.tp
  }
  readonly tp: TensorParallel
  /** Routes on `residual`, runs the experts on `x` (its pre-norm). */
  forward(residual: Tensor, x: Tensor): Tensor {
    const b = this.b
    const n = x.shape[0]!,
      k = this.c.moe!.topK
    const scores = this.proj.apply(b.rmsNorm(residual, this.routerNorm, this.c.rmsNormEps))
    const { values, indices } = b.topk(scores, k)
    const weights = b.mul(b.softmax(values), b.reshape(b.embedding(this.perExpertScale, indices), [n, k]))
    const act = b.glu(applyExperts(b, this.gate, x, indices), applyExperts(b, this.up, x, indices), 'gelu_approx')
    const out = b.weightedSum(applyExperts(b, this.down, act, indices), weights)
    return this.tp.size > 1 ? this.tp.allSum(out) : out
  }
}

class Block {
  readonly attention: Attention
  readonly mlp: GeGluMlp
  readonly moe?: MoeBlock
  readonly norms: Record<string, RmsNorm> = {}
  /** layer_scalar, read once: it multiplies every output row */
  readonly scalar: number
  constructor(
    w: Weights,
    c: Gemma4Config,
    sliding: boolean,
    rope: RopeOptions,
    private readonly b: Backend,
  ) {
    this.attention = new Attention(w.scope('self_attn'), c, sliding, rope, b)
    this.mlp = new GeGluMlp(w.scope('mlp'), c.hiddenSize, c.intermediateSize, b)
    const names = [
      'input_layernorm',
      'post_attention_layernorm',
      'pre_feedforward_layernorm',
      'post_feedforward_layernorm',
    ]
    if (c.moe) {
      this.moe = new MoeBlock(w, c, b)
      names.push('post_feedforward_layernorm_1', 'post_feedforward_layernorm_2', 'pre_feedforward_layernorm_2')
    }
    for (const name of names) this.norms[name] = new RmsNorm(w, name, c.hiddenSize, c.rmsNormEps, b)
    this.scalar = b.toFloat32(w.tensor('layer_scalar', [1]))[0]!
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const { b } = this
    const norm = (name: string, t: Tensor) => this.norms[name]!.apply(t)
    const h = b.add(
      x,
      norm('post_attention_layernorm', this.attention.forward(norm('input_layernorm', x), rows, layer)),
    )
    let f = this.mlp.forward(norm('pre_feedforward_layernorm', h))
    if (this.moe) {
      const experts = this.moe.forward(h, norm('pre_feedforward_layernorm_2', h))
      f = b.add(norm('post_feedforward_layernorm_1', f), norm('post_feedforward_layernorm_2', experts))
    }
    const out = b.add(h, norm('post_feedforward_layernorm', f))
    return this.scalar === 1 ? out : b.scale(out, this.scalar)
  }
}

class Gemma4Model extends LayerStack {
  declare readonly config: Gemma4Config
  readonly output?: OutputHead
  readonly #embedDtype: DType
  readonly #embedScale: number
  constructor(config: Gemma4Config, root: Weights, range: LayerRange, b: Backend) {
    const w = config.weightPrefix ? root.scope(config.weightPrefix.slice(0, -1)) : root
    super(config, range, b, w.scope('model'))
    const model = this.model
    const slidingRope = ropeFor(config.rope.sliding, config.headDim)
    const fullRope = ropeFor(config.rope.full, config.globalHeadDim)
    for (let i = range.lo; i < range.hi; i++) {
      const sliding = config.slidingLayers[i]!
      this.layers.push(new Block(model.scope(`layers.${i}`), config, sliding, sliding ? slidingRope : fullRope, b))
    }
    // under tensor parallel the head is split by vocabulary (layers.ts OutputHead); the soft cap works value by value
    if (range.last) this.output = new OutputHead(w, model, config, b, () => this.sharedEmbedding())
    const table = this.loadedEmbedding?.table
    const dtype = (this.#embedDtype = !table
      ? 'f32'
      : table.kind === 'dense'
        ? table.weight.dtype
        : table.matrix.scales.dtype)
    // h · √hidden with MLX's weak python scalar: the scale and the product both in the embedding's dtype
    const sqrt = Math.sqrt(config.hiddenSize)
    this.#embedScale =
      dtype === 'f32'
        ? Math.fround(sqrt)
        : b.scope(() => b.toFloat32(b.astype(b.fromFloat32(Float32Array.of(sqrt), [1]), dtype))[0]!)
  }
  embed(tokens: Tensor): Tensor {
    const b = this.b
    const h = b.scale(this.embedding!.embed(tokens), this.#embedScale)
    return this.#embedDtype === 'f32' ? h : b.astype(b.astype(h, this.#embedDtype), 'f32')
  }
  head(hidden: Tensor, slice = false): Tensor {
    const b = this.b
    const logits = this.output!.apply(hidden, !slice)
    const cap = this.config.finalLogitSoftcap
    return cap === null ? logits : b.scale(b.tanh(b.scale(logits, 1 / cap)), cap)
  }
  get headSplit(): boolean {
    return this.output?.split ?? false
  }
}

export const createModel = (
  config: Gemma4Config,
  weights: Weights,
  range: LayerRange,
  backend: Backend,
): Architecture => new Gemma4Model(config, weights, range, backend)

/** Tensor parallel: attention split by heads as for Llama (full layers' KV heads too), the dense GeGLU MLP and every
 * expert of the MoE block split by width, one all_sum after each (before the norms that follow them); lm_head split by
 * vocabulary. */
export const tensorParallel = true

/** Beyond heads, KV heads and intermediate_size: the full layers' KV heads and the experts' width. */
export function shardExtra(c: Gemma4Config, size: number): { parts: [string, number][]; config: Gemma4Config } {
  const parts: [string, number][] = [['KV heads of the full-attention layers', c.globalKvHeads]]
  if (c.moe) parts.push(['expert width (moe_intermediate_size)', c.moe.intermediate])
  return {
    parts,
    config: {
      ...c,
      globalKvHeads: c.globalKvHeads / size,
      moe: c.moe && { ...c.moe, intermediate: c.moe.intermediate / size },
    },
  }
}
