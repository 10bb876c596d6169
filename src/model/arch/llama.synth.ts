/** Synthetic Llama checkpoints for `model synth`, and the layer parts the other families reuse (norms, attention, MLP). */
import type { SynthFamily, SynthSpec, SynthTensors } from '../synth.ts'

/** The input and post-attention norms every layer starts with, around `mean`. */
export function layerNorms(t: SynthTensors, p: string, hidden: number, mean = 1): void {
  t.float(`${p}.input_layernorm.weight`, [hidden], 0.1, mean)
  t.float(`${p}.post_attention_layernorm.weight`, [hidden], 0.1, mean)
}

/** Grouped-query attention's q/k/v/o projections. */
export function attention(t: SynthTensors, p: string, { hidden, heads, kvHeads, headDim }: SynthSpec): void {
  const std = 1 / Math.sqrt(hidden)
  t.matrix(`${p}.self_attn.q_proj`, heads * headDim, hidden, std)
  t.matrix(`${p}.self_attn.k_proj`, kvHeads * headDim, hidden, std)
  t.matrix(`${p}.self_attn.v_proj`, kvHeads * headDim, hidden, std)
  t.matrix(`${p}.self_attn.o_proj`, hidden, heads * headDim, 1 / Math.sqrt(heads * headDim))
}

/** A SwiGLU MLP (gate, up, down) under `m`, or `lead` stacked ones (experts), mxfp4 if asked. */
export function mlp(
  t: SynthTensors,
  m: string,
  hidden: number,
  intermediate: number,
  lead: number[] = [],
  mxfp4 = false,
): void {
  t.matrix(`${m}.gate_proj`, intermediate, hidden, 1 / Math.sqrt(hidden), lead, mxfp4)
  t.matrix(`${m}.up_proj`, intermediate, hidden, 1 / Math.sqrt(hidden), lead, mxfp4)
  t.matrix(`${m}.down_proj`, hidden, intermediate, 1 / Math.sqrt(intermediate), lead, mxfp4)
}

export const llama: SynthFamily = {
  modelType: 'llama',
  causalLm: 'LlamaForCausalLM',
  tied: false,
  plan: (spec) => ({
    layer(t, p) {
      layerNorms(t, p, spec.hidden)
      attention(t, p, spec)
      mlp(t, `${p}.mlp`, spec.hidden, spec.intermediate)
    },
    config: {
      rope_theta: 500000,
      attention_bias: false,
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8192,
      },
    },
  }),
}
