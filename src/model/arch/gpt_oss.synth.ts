/** Synthetic GPT-OSS checkpoints: biased attention with sinks on alternating sliding and full layers, and routed experts
 * with biases (in mxfp4 with --dtype mxfp4). */
import { DbcError } from '../../errors.ts'
import type { SynthFamily } from '../synth.ts'
import { attention, layerNorms, mlp } from './llama.synth.ts'
import { qkvBiases } from './qwen2.synth.ts'

export interface GptOssSynthOptions {
  /** Experts per layer (default 4) and experts each token uses (default 2). */
  experts?: number
  expertsPerToken?: number
  /** Keys a sliding layer attends (default 128); layers alternate sliding and full. */
  slidingWindow?: number
}

export const gptOss: SynthFamily = {
  modelType: 'gpt_oss',
  causalLm: 'GptOssForCausalLM',
  tied: false,
  mxfp4: true,
  plan(spec) {
    const { hidden, intermediate } = spec
    const experts = spec.experts ?? 4
    const perToken = spec.expertsPerToken ?? 2
    if (!Number.isInteger(experts) || !Number.isInteger(perToken) || perToken < 1 || perToken > experts) {
      throw new DbcError('E_SYNTH', `--experts-per-token ${perToken} must be between 1 and --experts ${experts}`)
    }
    return {
      layer(t, p) {
        layerNorms(t, p, hidden)
        attention(t, p, spec)
        qkvBiases(t, p, spec)
        t.float(`${p}.self_attn.o_proj.bias`, [hidden], 0.1)
        t.float(`${p}.self_attn.sinks`, [spec.heads], 1)
        // a wide router spread makes the top-k choice clear-cut, so quantized and float models pick the same experts
        t.matrix(`${p}.mlp.router`, experts, hidden, 4 / Math.sqrt(hidden))
        t.float(`${p}.mlp.router.bias`, [experts], 0.5)
        mlp(t, `${p}.mlp.experts`, hidden, intermediate, [experts], spec.dtype === 'mxfp4')
        for (const part of ['gate_proj', 'up_proj'])
          t.float(`${p}.mlp.experts.${part}.bias`, [experts, intermediate], 0.1)
        t.float(`${p}.mlp.experts.down_proj.bias`, [experts, hidden], 0.1)
      },
      // mlx-lm's GPT-OSS recipe keeps the router at 8 bits, group 64
      overrides:
        spec.dtype === 'q4' && hidden % 64 === 0
          ? Object.fromEntries(
              Array.from({ length: spec.layers }, (_, l) => [
                `model.layers.${l}.mlp.router`,
                { bits: 8, groupSize: 64 },
              ]),
            )
          : undefined,
      config: {
        rms_norm_eps: 1e-5,
        rope_theta: 150000,
        num_local_experts: experts,
        num_experts_per_tok: perToken,
        experts_per_token: perToken,
        sliding_window: spec.slidingWindow ?? 128,
        layer_types: Array.from({ length: spec.layers }, (_, l) => (l % 2 ? 'full_attention' : 'sliding_attention')),
        attention_bias: true,
        swiglu_limit: 7.0,
        rope_scaling: {
          rope_type: 'yarn',
          factor: 32.0,
          beta_fast: 32.0,
          beta_slow: 1.0,
          truncate: false,
          original_max_position_embeddings: 4096,
        },
      },
    }
  },
}
