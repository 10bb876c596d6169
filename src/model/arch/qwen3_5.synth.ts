/** Synthetic Qwen3.5 checkpoints: Gated DeltaNet layers with every n-th one gated full attention, the text model nested in
 * a multimodal checkpoint, and with `experts` the MoE variant. */
import { DbcError } from '../../errors.ts'
import type { SynthFamily } from '../synth.ts'
import { layerNorms, mlp } from './llama.synth.ts'
import { qkNorms } from './qwen3.synth.ts'

export interface Qwen35SynthOptions {
  /** Every n-th layer is full attention, the others Gated DeltaNet (default 4). */
  fullAttentionInterval?: number
  /** Linear attention: key/value heads (default kv-heads / heads) and head dims (default head-dim), conv kernel (4). */
  linearKeyHeads?: number
  linearValueHeads?: number
  linearKeyDim?: number
  linearValueDim?: number
  convKernel?: number
  /** Routed experts per layer (default none: dense), experts each token uses (default 2), and their intermediate size
   * (default intermediate / 2); the shared expert has the dense intermediate size. */
  experts?: number
  expertsPerToken?: number
  moeIntermediate?: number
}

export const qwen35: SynthFamily = {
  modelType: 'qwen3_5',
  causalLm: 'Qwen3_5ForConditionalGeneration',
  tied: true,
  // Qwen3.5 checkpoints nest the text model under language_model. (mlx-lm qwen3_5 sanitize)
  root: 'language_model.',
  plan(spec) {
    const { hidden, heads, kvHeads, headDim, intermediate } = spec
    const linear = {
      interval: spec.fullAttentionInterval ?? 4,
      keyHeads: spec.linearKeyHeads ?? kvHeads,
      valueHeads: spec.linearValueHeads ?? heads,
      keyDim: spec.linearKeyDim ?? headDim,
      valueDim: spec.linearValueDim ?? headDim,
      kernel: spec.convKernel ?? 4,
    }
    for (const [k, v] of Object.entries(linear))
      if (!Number.isInteger(v) || v < 1) throw new DbcError('E_SYNTH', `qwen3_5: ${k} must be a positive integer`)
    if (linear.valueHeads % linear.keyHeads)
      throw new DbcError(
        'E_SYNTH',
        `qwen3_5: linear value heads ${linear.valueHeads} must be a multiple of key heads ${linear.keyHeads}`,
      )
    const moe = spec.experts
      ? {
          experts: spec.experts,
          topK: spec.expertsPerToken ?? 2,
          intermediate: spec.moeIntermediate ?? Math.max(1, Math.floor(intermediate / 2)),
        }
      : null
    if (moe && (moe.topK < 1 || moe.topK > moe.experts))
      throw new DbcError('E_SYNTH', `--experts-per-token ${moe.topK} must be between 1 and --experts ${moe.experts}`)
    const keyDim = linear.keyHeads * linear.keyDim,
      valueDim = linear.valueHeads * linear.valueDim,
      convDim = 2 * keyDim + valueDim
    return {
      layer(t, p, l) {
        layerNorms(t, p, hidden)
        if ((l + 1) % linear.interval !== 0) {
          const a = `${p}.linear_attn`
          t.matrix(`${a}.in_proj_qkv`, convDim, hidden, 1 / Math.sqrt(hidden))
          t.matrix(`${a}.in_proj_z`, valueDim, hidden, 1 / Math.sqrt(hidden))
          t.matrix(`${a}.in_proj_b`, linear.valueHeads, hidden, 1 / Math.sqrt(hidden))
          t.matrix(`${a}.in_proj_a`, linear.valueHeads, hidden, 1 / Math.sqrt(hidden))
          // MLX Conv1d layout [channels, kernel, 1]
          t.float(`${a}.conv1d.weight`, [convDim, linear.kernel, 1], 0.5)
          t.float(`${a}.dt_bias`, [linear.valueHeads], 0.5, 1)
          // A_log stays f32 in MLX checkpoints (mlx-lm's cast_predicate); decay rates exp(A_log) around 1
          t.float(`${a}.A_log`, [linear.valueHeads], 0.5, 0, 'f32')
          t.float(`${a}.norm.weight`, [linear.valueDim], 0.1, 1)
          t.matrix(`${a}.out_proj`, hidden, valueDim, 1 / Math.sqrt(valueDim))
        } else {
          // the query projection also carries the output gate, hence 2 × heads
          t.matrix(`${p}.self_attn.q_proj`, 2 * heads * headDim, hidden, 1 / Math.sqrt(hidden))
          t.matrix(`${p}.self_attn.k_proj`, kvHeads * headDim, hidden, 1 / Math.sqrt(hidden))
          t.matrix(`${p}.self_attn.v_proj`, kvHeads * headDim, hidden, 1 / Math.sqrt(hidden))
          t.matrix(`${p}.self_attn.o_proj`, hidden, heads * headDim, 1 / Math.sqrt(heads * headDim))
          qkNorms(t, p, headDim)
        }
        if (!moe) return mlp(t, `${p}.mlp`, hidden, intermediate)
        // a wide router spread makes the top-k choice clear-cut, so quantized and float models pick the same experts
        t.matrix(`${p}.mlp.gate`, moe.experts, hidden, 4 / Math.sqrt(hidden))
        mlp(t, `${p}.mlp.switch_mlp`, hidden, moe.intermediate, [moe.experts])
        mlp(t, `${p}.mlp.shared_expert`, hidden, intermediate)
        t.matrix(`${p}.mlp.shared_expert_gate`, 1, hidden, 1 / Math.sqrt(hidden))
      },
      config: {
        full_attention_interval: linear.interval,
        linear_num_key_heads: linear.keyHeads,
        linear_num_value_heads: linear.valueHeads,
        linear_key_head_dim: linear.keyDim,
        linear_value_head_dim: linear.valueDim,
        linear_conv_kernel_dim: linear.kernel,
        rope_parameters: {
          rope_type: 'default',
          rope_theta: 10000000,
          partial_rotary_factor: 0.25,
          mrope_section: [11, 11, 10],
        },
        ...(moe
          ? {
              num_experts: moe.experts,
              num_experts_per_tok: moe.topK,
              moe_intermediate_size: moe.intermediate,
              shared_expert_intermediate_size: intermediate,
              norm_topk_prob: true,
            }
          : {}),
      },
      // Qwen3.5 checkpoints are multimodal: the text config nests under text_config, quantization and EOS stay at the top
      nest: ({ quantization, quantization_config, dbcluster_synthetic, architectures, model_type, ...text }) => ({
        model_type: moe ? 'qwen3_5_moe' : model_type,
        architectures,
        text_config: { ...text, model_type: 'qwen3_5_text' },
        tie_word_embeddings: text.tie_word_embeddings,
        eos_token_id: text.eos_token_id,
        ...(quantization ? { quantization, quantization_config } : {}),
        dbcluster_synthetic,
      }),
    }
  },
}
