/** Qwen3.5 (model_type qwen3_5; the text config under `text_config` or at the top, tensors under `language_model.`,
 * vision tensors ignored), as mlx-lm qwen3_5.py after its sanitize:
 * - every `full_attention_interval`-th layer is gated full attention (q_proj yields a query and a gate per head, q/k
 *   RMSNorm, RoPE on the first head_dim × partial_rotary_factor dims, output × σ(gate)); the others are Gated DeltaNet
 *   linear attention: in_proj_qkv → causal depthwise conv1d (kernel linear_conv_kernel_dim) → SiLU → q, k, v; q and k
 *   RMS-normalised (q also × 1/key_dim), the gated delta rule over a per-sequence state, a gated RMSNorm (× SiLU(z)) and
 *   out_proj. Those layers keep a recurrent state per sequence, not a KV cache.
 * - plain pre-norm blocks with a SwiGLU MLP; norm weights are stored as used (the +1 is applied by mlx-lm's sanitize).
 * - with num_experts > 0 (qwen3_5_moe) the MLP is a sparse MoE block (mlx-lm Qwen3NextSparseMoeBlock): softmax router over
 *   all experts, top num_experts_per_tok (renormalised when norm_topk_prob), SwiGLU experts, plus a shared SwiGLU expert
 *   scaled by σ(shared_expert_gate). */
import type { Backend, RopeOptions, Tensor } from '../../tensor/backend.ts'
import type { Architecture, LayerRange, StepRows } from '../architecture.ts'
import { parseDecoderConfig, requireInt as positiveInt, type DecoderConfig } from '../config.ts'
import { CheckpointError } from '../errors.ts'
import type { LayerCacheSpec } from '../kv-cache.ts'
import { FusedLinear, Linear, OutputHead, RmsNorm, SwiGluMlp } from '../layers.ts'
import { LayerStack } from '../layer-stack.ts'
import { applyExperts, type ExpertsWeight, type Weights } from '../weights.ts'
import type { TensorParallel } from '../../tensor/tensor-parallel.ts'

export interface Qwen35Config extends DecoderConfig {
  moe: { experts: number; topK: number; intermediate: number; sharedIntermediate: number; normTopk: boolean } | null
  fullAttentionInterval: number
  linearKeyHeads: number
  linearValueHeads: number
  linearKeyDim: number
  linearValueDim: number
  convKernel: number
  /** Leading head_dim dims rotated by RoPE. */
  ropeDims: number
}

/** mlx-lm TextModelArgs defaults for keys a config may leave out. */
const DEFAULTS = {
  rms_norm_eps: 1e-6,
  vocab_size: 151936,
  num_key_value_heads: 8,
  linear_num_value_heads: 64,
  linear_num_key_heads: 16,
  linear_key_head_dim: 192,
  linear_value_head_dim: 128,
  linear_conv_kernel_dim: 4,
  full_attention_interval: 4,
  tie_word_embeddings: false,
  attention_bias: false,
}

export const isLinearLayer = (layer: number, interval: number): boolean => (layer + 1) % interval !== 0

export function parseConfig(raw: Record<string, unknown>): Qwen35Config {
  const nested = raw.text_config
  if (nested !== undefined && (!nested || typeof nested !== 'object' || Array.isArray(nested))) {
    throw new CheckpointError('E_CONFIG', "config.json: 'text_config' must be an object")
  }
  const text = (nested ?? raw) as Record<string, unknown>
  const merged: Record<string, unknown> = { ...DEFAULTS }
  for (const [k, v] of Object.entries(text)) if (v !== undefined && v !== null) merged[k] = v
  // quantization and EOS live at the top of a multimodal config
  for (const key of ['quantization', 'quantization_config', 'eos_token_id'] as const)
    if (raw[key] !== undefined && merged[key] === undefined) merged[key] = raw[key]
  const moe =
    Number(merged.num_experts ?? 0) > 0
      ? {
          experts: positiveInt(merged, 'num_experts'),
          topK: positiveInt(merged, 'num_experts_per_tok'),
          intermediate: positiveInt(merged, 'moe_intermediate_size'),
          sharedIntermediate: positiveInt(merged, 'shared_expert_intermediate_size'),
          normTopk: Boolean(merged.norm_topk_prob ?? true),
        }
      : null
  if (moe && moe.topK > moe.experts)
    throw new CheckpointError(
      'E_CONFIG',
      `config.json: num_experts_per_tok ${moe.topK} exceeds num_experts ${moe.experts}`,
    )
  // rope_theta and partial_rotary_factor sit in rope_parameters (mlx-lm __post_init__), else at the top
  const rope = (merged.rope_parameters ?? {}) as Record<string, unknown>
  merged.rope_theta ??= rope.rope_theta ?? 100000
  const partial = Number(merged.partial_rotary_factor ?? rope.partial_rotary_factor ?? 0.25)
  const ropeType = String(rope.type ?? rope.rope_type ?? 'default')
  if (ropeType !== 'default' && ropeType !== 'mrope') {
    throw new CheckpointError(
      'E_CONFIG',
      `rope_parameters type '${ropeType}' is not supported`,
      'supported: default (mrope sections rotate text alike)',
    )
  }
  const base = parseDecoderConfig(merged, { tieWordEmbeddings: false, attentionBias: false })
  const c = {
    fullAttentionInterval: positiveInt(merged, 'full_attention_interval'),
    linearKeyHeads: positiveInt(merged, 'linear_num_key_heads'),
    linearValueHeads: positiveInt(merged, 'linear_num_value_heads'),
    linearKeyDim: positiveInt(merged, 'linear_key_head_dim'),
    linearValueDim: positiveInt(merged, 'linear_value_head_dim'),
    convKernel: positiveInt(merged, 'linear_conv_kernel_dim'),
  }
  if (c.linearValueHeads % c.linearKeyHeads) {
    throw new CheckpointError(
      'E_CONFIG',
      `config.json: linear_num_value_heads ${c.linearValueHeads} is not a multiple of linear_num_key_heads ${c.linearKeyHeads}`,
    )
  }
  const ropeDims = Math.trunc(base.headDim * partial)
  if (!(ropeDims >= 2 && ropeDims % 2 === 0 && ropeDims <= base.headDim)) {
    throw new CheckpointError(
      'E_CONFIG',
      `config.json: partial_rotary_factor ${partial} gives ${ropeDims} rotated dims of head_dim ${base.headDim}`,
      'it must give an even number ≥ 2',
    )
  }
  const convChannels = 2 * c.linearKeyHeads * c.linearKeyDim + c.linearValueHeads * c.linearValueDim
  const layerCaches: LayerCacheSpec[] = Array.from({ length: base.numLayers }, (_, i) =>
    isLinearLayer(i, c.fullAttentionInterval)
      ? {
          kind: 'recurrent',
          convChannels,
          convKernel: c.convKernel,
          heads: c.linearValueHeads,
          keyDim: c.linearKeyDim,
          valueDim: c.linearValueDim,
        }
      : { kind: 'full', kvHeads: base.numKvHeads, headDim: base.headDim },
  )
  return {
    ...base,
    ...c,
    moe,
    modelType: String(raw.model_type),
    ropeDims,
    layerCaches,
    weightPrefix: 'language_model.',
    ...(moe ? { experts: { path: '.mlp.switch_mlp.', share: moe.topK / moe.experts } } : {}),
  }
}

interface Mixer {
  forward(x: Tensor, rows: StepRows, layer: number): Tensor
}

/** Gated full attention (mlx-lm Qwen3NextAttention). */
class GatedAttention implements Mixer {
  readonly qkv: FusedLinear
  readonly o: Linear
  readonly qNorm: RmsNorm
  readonly kNorm: RmsNorm
  constructor(
    w: Weights,
    private readonly c: Qwen35Config,
    private readonly rope: RopeOptions,
    private readonly b: Backend,
  ) {
    const q = 2 * c.numHeads * c.headDim,
      kv = c.numKvHeads * c.headDim,
      bias = c.attentionBias
    // tensor parallel: q_proj's rows are per head (query, then gate), so this rank's heads are one contiguous block
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
    this.o = new Linear(w.linear('o_proj', c.hiddenSize, c.numHeads * c.headDim, { bias, shard: 'in' }), b)
    this.qNorm = new RmsNorm(w, 'q_norm', c.headDim, c.rmsNormEps, b)
    this.kNorm = new RmsNorm(w, 'k_norm', c.headDim, c.rmsNormEps, b)
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const { b, c } = this
    const n = x.shape[0]!,
      D = c.headDim
    const [qx, kx, vx] = this.qkv.apply(x)
    // per head: D query values, then D gate values
    const qg = b.reshape(qx!, [n, c.numHeads, 2 * D])
    const q = b.rope(this.qNorm.apply(b.slice(qg, 2, 0, D)), rows.positions, this.rope)
    const gate = b.reshape(b.slice(qg, 2, D, 2 * D), [n, c.numHeads * D])
    const k = b.rope(this.kNorm.apply(b.reshape(kx!, [n, c.numKvHeads, D])), rows.positions, this.rope)
    const out = rows.cache.attend(layer, q, k, b.reshape(vx!, [n, c.numKvHeads, D]), rows.slots, rows.positions, {
      scale: D ** -0.5,
    })
    return this.o.apply(b.glu(gate, b.reshape(out, [n, c.numHeads * D]), 'sigmoid'))
  }
}

/** Gated DeltaNet linear attention (mlx-lm qwen3_5.GatedDeltaNet). */
class GatedDeltaNet implements Mixer {
  readonly inProj: FusedLinear
  readonly conv: Tensor
  readonly dtBias: Tensor
  readonly aLog: Tensor
  readonly norm: RmsNorm
  readonly out: Linear
  readonly #ones: Tensor
  readonly #keyDim: number
  readonly #valueDim: number
  constructor(
    w: Weights,
    private readonly c: Qwen35Config,
    private readonly b: Backend,
  ) {
    const { hiddenSize: hidden, linearKeyHeads: Hk, linearValueHeads: Hv, linearKeyDim: Dk, linearValueDim: Dv } = c
    this.#keyDim = Hk * Dk
    this.#valueDim = Hv * Dv
    const convDim = 2 * this.#keyDim + this.#valueDim
    // tensor parallel: this rank's key and value heads (c holds their counts): in_proj_qkv and the conv weight are q|k|v
    // blocks, each split on its own; z, b, a, dt_bias and A_log follow the value heads, out_proj their columns
    const blocks = [this.#keyDim, this.#keyDim, this.#valueDim]
    this.inProj = new FusedLinear(
      [
        w.linear('in_proj_qkv', convDim, hidden, { shard: 'out', segments: blocks }),
        w.linear('in_proj_z', this.#valueDim, hidden, { shard: 'out' }),
        w.linear('in_proj_b', Hv, hidden, { shard: 'out' }),
        w.linear('in_proj_a', Hv, hidden, { shard: 'out' }),
      ],
      [convDim, this.#valueDim, Hv, Hv],
      w,
      b,
      // the recurrent state integrates its inputs over the whole sequence, so the cpu kernels' int8 rounding of
      // activations would accumulate there (measured: 29% logit error on q4 instead of ≤ 10%): keep them in float
      true,
    )
    // MLX Conv1d weight [out, kernel, in/groups = 1]
    const { rank, size } = w.tp
    const split = (segments?: number[]) =>
      size > 1 ? { axis: 0, rank, size, segments: segments?.map((n) => n * size) } : undefined
    this.conv = b.reshape(w.tensor('conv1d.weight', [convDim, c.convKernel, 1], 'float', split(blocks)), [
      convDim,
      c.convKernel,
    ])
    w.loaded.push(this.conv)
    this.dtBias = w.tensor('dt_bias', [Hv], 'float', split())
    this.aLog = w.tensor('A_log', [Hv], 'float', split())
    this.norm = new RmsNorm(w, 'norm', Dv, c.rmsNormEps, b)
    this.out = new Linear(w.linear('out_proj', hidden, this.#valueDim, { shard: 'in' }), b)
    this.#ones = b.fromFloat32(new Float32Array(Dk).fill(1), [Dk])
    w.loaded.push(this.#ones)
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const { b, c } = this
    const n = x.shape[0]!,
      Dk = c.linearKeyDim,
      kd = this.#keyDim
    const state = rows.cache.recurrent(layer)
    const [qkv, z, beta, a] = this.inProj.apply(x)
    const mixed = b.silu(b.causalConv(qkv!, this.conv, state.conv, rows.slots, rows.positions))
    const heads = (t: Tensor, h: number, d: number) => b.reshape(t, [n, h, d])
    // q, k: RMS-normalised without a weight; q also scaled by 1/Dk (mlx-lm: inv_scale² · rms_norm(q), inv_scale · rms_norm(k))
    const q = b.scale(b.rmsNorm(heads(b.slice(mixed, 1, 0, kd), c.linearKeyHeads, Dk), this.#ones, 1e-6), 1 / Dk)
    const k = b.scale(
      b.rmsNorm(heads(b.slice(mixed, 1, kd, 2 * kd), c.linearKeyHeads, Dk), this.#ones, 1e-6),
      Dk ** -0.5,
    )
    const v = heads(b.slice(mixed, 1, 2 * kd, 2 * kd + this.#valueDim), c.linearValueHeads, c.linearValueDim)
    const y = b.gatedDelta(q, k, v, a!, beta!, this.aLog, this.dtBias, state.state, rows.slots, rows.positions)
    const gated = b.glu(heads(z!, c.linearValueHeads, c.linearValueDim), this.norm.apply(y), 'silu')
    return this.out.apply(b.reshape(gated, [n, this.#valueDim]))
  }
}

/** Sparse MoE with a gated shared expert (mlx-lm Qwen3NextSparseMoeBlock). */
class SparseMoe {
  readonly router: Linear
  readonly gate: ExpertsWeight
  readonly up: ExpertsWeight
  readonly down: ExpertsWeight
  readonly shared: SwiGluMlp
  readonly sharedGate: Linear
  constructor(
    w: Weights,
    private readonly c: Qwen35Config,
    private readonly b: Backend,
  ) {
    const { experts: E, intermediate: inter, sharedIntermediate } = c.moe!
    const hidden = c.hiddenSize
    // the router's logits pick experts, a discrete choice: keep its activations in float (see Backend.quantizedLinear)
    this.router = new Linear(w.linear('gate', E, hidden), b, true)
    // tensor parallel: every expert and the shared one keep this rank's share of their width (the shared one sums its
    // own output); the router and the shared gate stay whole and see the same input on every rank
    const experts = w.scope('switch_mlp')
    this.gate = experts.experts('gate_proj', E, inter, hidden, { shard: 'out' })
    this.up = experts.experts('up_proj', E, inter, hidden, { shard: 'out' })
    this.down = experts.experts('down_proj', E, hidden, inter, { shard: 'in' })
    this.shared = new SwiGluMlp(w.scope('shared_expert'), { ...c, intermediateSize: sharedIntermediate }, b)
    this.sharedGate = new Linear(w.linear('shared_expert_gate', 1, hidden), b)
    this.tp = w.tp
  }
  readonly tp: TensorParallel
  forward(x: Tensor): Tensor {
    const b = this.b
    const n = x.shape[0]!,
      { topK, normTopk } = this.c.moe!
    const logits = this.router.apply(x)
    // the top-k of the softmax are the top-k logits; renormalised, their weights are the softmax of those k logits
    const { values, indices } = b.topk(logits, topK)
    const weights = normTopk ? b.softmax(values) : b.topk(b.softmax(logits), topK).values
    const act = b.glu(applyExperts(b, this.gate, x, indices), applyExperts(b, this.up, x, indices), 'silu')
    const partial = b.weightedSum(applyExperts(b, this.down, act, indices), weights)
    const routed = this.tp.size > 1 ? this.tp.allSum(partial) : partial
    // σ(shared_expert_gate(x)) · shared(x): a one-"expert" weighted sum with the sigmoid as its weight
    const sigma = b.glu(this.sharedGate.apply(x), b.fromFloat32(new Float32Array(n).fill(1), [n, 1]), 'sigmoid')
    const shared = b.weightedSum(b.reshape(this.shared.forward(x), [n, 1, this.c.hiddenSize]), sigma)
    return b.add(routed, shared)
  }
}

class Block {
  readonly mixer: Mixer
  readonly mlp: SwiGluMlp | SparseMoe
  readonly inputNorm: RmsNorm
  readonly postAttentionNorm: RmsNorm
  constructor(
    w: Weights,
    c: Qwen35Config,
    linear: boolean,
    rope: RopeOptions,
    private readonly b: Backend,
  ) {
    this.mixer = linear
      ? new GatedDeltaNet(w.scope('linear_attn'), c, b)
      : new GatedAttention(w.scope('self_attn'), c, rope, b)
    this.mlp = c.moe ? new SparseMoe(w.scope('mlp'), c, b) : new SwiGluMlp(w.scope('mlp'), c, b)
    this.inputNorm = new RmsNorm(w, 'input_layernorm', c.hiddenSize, c.rmsNormEps, b)
    this.postAttentionNorm = new RmsNorm(w, 'post_attention_layernorm', c.hiddenSize, c.rmsNormEps, b)
  }
  forward(x: Tensor, rows: StepRows, layer: number): Tensor {
    const h = this.b.add(x, this.mixer.forward(this.inputNorm.apply(x), rows, layer))
    return this.b.add(h, this.mlp.forward(this.postAttentionNorm.apply(h)))
  }
}

class Qwen35Model extends LayerStack {
  readonly output?: OutputHead
  constructor(config: Qwen35Config, root: Weights, range: LayerRange, b: Backend) {
    const w = root.scope('language_model')
    super(config, range, b, w.scope('model'))
    const rope: RopeOptions = { dims: config.ropeDims, traditional: false, base: config.ropeTheta, scale: 1 }
    for (let i = range.lo; i < range.hi; i++)
      this.layers.push(
        new Block(this.model.scope(`layers.${i}`), config, isLinearLayer(i, config.fullAttentionInterval), rope, b),
      )
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
  config: Qwen35Config,
  weights: Weights,
  range: LayerRange,
  backend: Backend,
): Architecture => new Qwen35Model(config, weights, range, backend)

/** Tensor parallel: gated full attention split by heads; Gated DeltaNet split by key and value heads (its q|k|v blocks
 * each on their own, with the conv channels and the recurrent state of this rank's heads); the MLP, or every expert
 * and the shared expert, split by width; lm_head split by vocabulary. */
export const tensorParallel = true

/** Beyond heads, KV heads and intermediate_size: the linear-attention heads and the experts' widths. */
export function shardExtra(c: Qwen35Config, size: number): { parts: [string, number][]; config: Qwen35Config } {
  const parts: [string, number][] = [
    ['linear-attention key heads', c.linearKeyHeads],
    ['linear-attention value heads', c.linearValueHeads],
  ]
  if (c.moe)
    parts.push(
      ['expert width (moe_intermediate_size)', c.moe.intermediate],
      ['shared expert width', c.moe.sharedIntermediate],
    )
  const moe = c.moe && {
    ...c.moe,
    intermediate: c.moe.intermediate / size,
    sharedIntermediate: c.moe.sharedIntermediate / size,
  }
  return {
    parts,
    config: {
      ...c,
      linearKeyHeads: c.linearKeyHeads / size,
      linearValueHeads: c.linearValueHeads / size,
      moe,
    },
  }
}
