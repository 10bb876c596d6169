/** Synthetic Qwen3 checkpoints: Llama's tensors plus q/k norms, tied, without llama3 rope scaling. */
import type { SynthFamily, SynthTensors } from '../synth.ts'
import { attention, layerNorms, mlp } from './llama.synth.ts'

/** Per-head RMS norms on queries and keys, around `mean`. */
export function qkNorms(t: SynthTensors, p: string, headDim: number, mean = 1): void {
  t.float(`${p}.self_attn.q_norm.weight`, [headDim], 0.1, mean)
  t.float(`${p}.self_attn.k_norm.weight`, [headDim], 0.1, mean)
}

export const qwen3: SynthFamily = {
  modelType: 'qwen3',
  causalLm: 'Qwen3ForCausalLM',
  tied: true,
  plan: (spec) => ({
    layer(t, p) {
      layerNorms(t, p, spec.hidden)
      attention(t, p, spec)
      qkNorms(t, p, spec.headDim)
      mlp(t, `${p}.mlp`, spec.hidden, spec.intermediate)
    },
  }),
}
