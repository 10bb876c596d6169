/** Synthetic Gemma 3 text checkpoints: Qwen3's layer plus feed-forward norms, sliding-window layers with every n-th global. */
import type { SynthFamily } from '../synth.ts'
import { attention, layerNorms, mlp } from './llama.synth.ts'
import { qkNorms } from './qwen3.synth.ts'

export interface Gemma3SynthOptions {
  /** Keys a sliding layer attends (default 512). */
  slidingWindow?: number
  /** Every n-th layer is global (default 6). */
  slidingWindowPattern?: number
}

export const gemma3: SynthFamily = {
  modelType: 'gemma3_text',
  causalLm: 'Gemma3ForCausalLM',
  tied: true,
  plan: (spec) => ({
    layer(t, p) {
      // Gemma's norms scale by 1 + weight: store weights around 0 so the effective scale is near 1, as trained ones are
      layerNorms(t, p, spec.hidden, 0)
      t.float(`${p}.pre_feedforward_layernorm.weight`, [spec.hidden], 0.1)
      t.float(`${p}.post_feedforward_layernorm.weight`, [spec.hidden], 0.1)
      attention(t, p, spec)
      qkNorms(t, p, spec.headDim, 0)
      mlp(t, `${p}.mlp`, spec.hidden, spec.intermediate)
    },
    config: {
      rope_local_base_freq: 10000,
      sliding_window: spec.slidingWindow ?? 512,
      sliding_window_pattern: spec.slidingWindowPattern ?? 6,
      query_pre_attn_scalar: spec.headDim,
      hidden_activation: 'gelu_pytorch_tanh',
      final_logit_softcapping: null,
    },
  }),
}
