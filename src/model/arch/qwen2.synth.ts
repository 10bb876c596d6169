/** Synthetic Qwen2 checkpoints: Llama's tensors plus biases on q/k/v (not o), tied, without llama3 rope scaling. */
import type { SynthFamily, SynthSpec, SynthTensors } from '../synth.ts'
import { attention, layerNorms, mlp } from './llama.synth.ts'

/** Biases on the q/k/v projections. */
export function qkvBiases(t: SynthTensors, p: string, { heads, kvHeads, headDim }: SynthSpec): void {
  t.float(`${p}.self_attn.q_proj.bias`, [heads * headDim], 0.1)
  t.float(`${p}.self_attn.k_proj.bias`, [kvHeads * headDim], 0.1)
  t.float(`${p}.self_attn.v_proj.bias`, [kvHeads * headDim], 0.1)
}

export const qwen2: SynthFamily = {
  modelType: 'qwen2',
  causalLm: 'Qwen2ForCausalLM',
  tied: true,
  plan: (spec) => ({
    layer(t, p) {
      layerNorms(t, p, spec.hidden)
      attention(t, p, spec)
      qkvBiases(t, p, spec)
      mlp(t, `${p}.mlp`, spec.hidden, spec.intermediate)
    },
  }),
}
