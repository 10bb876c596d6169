/** Synthetic Gemma 4 text checkpoints: sliding layers and every n-th full-attention layer with a wider head (optionally keys
 * as values), and with `experts` a MoE block beside the dense MLP. */
import { DbcError } from '../../errors.ts'
import type { SynthFamily } from '../synth.ts'
import { layerNorms, mlp } from './llama.synth.ts'

export interface Gemma4SynthOptions {
  /** Keys a sliding layer attends (default 512), and every n-th layer is full attention (default 5). */
  slidingWindow?: number
  slidingWindowPattern?: number
  /** Experts of the MoE block (default none), experts each token uses (default 2), and their intermediate size
   * (default intermediate / 2). */
  experts?: number
  expertsPerToken?: number
  moeIntermediate?: number
  /** Full-attention layers with keys as values (attention_k_eq_v) and their head dim (default 2 × head-dim). */
  kEqV?: boolean
  globalHeadDim?: number
}

export const gemma4: SynthFamily = {
  modelType: 'gemma4_text',
  causalLm: 'Gemma4ForCausalLM',
  tied: true,
  plan(spec) {
    const { hidden, heads, kvHeads } = spec
    const pattern = spec.slidingWindowPattern ?? 5
    const globalHeadDim = spec.globalHeadDim ?? 2 * spec.headDim
    const kEqV = spec.kEqV ?? false
    const experts = spec.experts ?? 0
    const topK = spec.expertsPerToken ?? 2
    const moeIntermediate = spec.moeIntermediate ?? Math.max(1, Math.floor(spec.intermediate / 2))
    if (experts && (topK < 1 || topK > experts))
      throw new DbcError('E_SYNTH', `--experts-per-token ${topK} must be between 1 and --experts ${experts}`)
    const isFull = (l: number) => (l + 1) % pattern === 0
    return {
      layer(t, p, l) {
        layerNorms(t, p, hidden)
        t.float(`${p}.pre_feedforward_layernorm.weight`, [hidden], 0.1, 1)
        t.float(`${p}.post_feedforward_layernorm.weight`, [hidden], 0.1, 1)
        t.float(`${p}.layer_scalar`, [1], 0.1, 1)
        const full = isFull(l)
        const d = full ? globalHeadDim : spec.headDim
        t.matrix(`${p}.self_attn.q_proj`, heads * d, hidden, 1 / Math.sqrt(hidden))
        t.matrix(`${p}.self_attn.k_proj`, kvHeads * d, hidden, 1 / Math.sqrt(hidden))
        if (!(full && kEqV)) t.matrix(`${p}.self_attn.v_proj`, kvHeads * d, hidden, 1 / Math.sqrt(hidden))
        t.matrix(`${p}.self_attn.o_proj`, hidden, heads * d, 1 / Math.sqrt(heads * d))
        // Gemma 4 does not scale scores: q/k norm weights around d^-¼ keep q·k near unit variance, as trained ones do,
        // instead of a near-argmax softmax
        const qk = d ** -0.25
        t.float(`${p}.self_attn.q_norm.weight`, [d], 0.1 * qk, qk)
        t.float(`${p}.self_attn.k_norm.weight`, [d], 0.1 * qk, qk)
        mlp(t, `${p}.mlp`, hidden, spec.intermediate)
        if (!experts) return
        for (const n of ['post_feedforward_layernorm_1', 'post_feedforward_layernorm_2', 'pre_feedforward_layernorm_2'])
          t.float(`${p}.${n}.weight`, [hidden], 0.1, 1)
        // a wide router spread makes the top-k choice clear-cut, so quantized and float models pick the same experts
        t.matrix(`${p}.router.proj`, experts, hidden, 4)
        t.float(`${p}.router.scale`, [hidden], 0.1, 1)
        t.float(`${p}.router.per_expert_scale`, [experts], 0.1, 1)
        mlp(t, `${p}.experts.switch_glu`, hidden, moeIntermediate, [experts])
      },
      config: {
        global_head_dim: globalHeadDim,
        attention_k_eq_v: kEqV,
        num_global_key_value_heads: kvHeads,
        sliding_window: spec.slidingWindow ?? 512,
        sliding_window_pattern: pattern,
        layer_types: Array.from({ length: spec.layers }, (_, l) =>
          isFull(l) ? 'full_attention' : 'sliding_attention',
        ),
        num_kv_shared_layers: 0,
        hidden_size_per_layer_input: 0,
        final_logit_softcapping: 30.0,
        enable_moe_block: experts > 0,
        ...(experts ? { num_experts: experts, top_k_experts: topK, moe_intermediate_size: moeIntermediate } : {}),
        rope_parameters: {
          full_attention: { partial_rotary_factor: 0.25, rope_theta: 1000000.0, rope_type: 'proportional' },
          sliding_attention: { partial_rotary_factor: 1.0, rope_theta: 10000.0, rope_type: 'default' },
        },
      },
    }
  },
}
