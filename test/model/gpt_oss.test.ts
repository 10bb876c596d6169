/** GPT-OSS: the conformance suite (test/model/conformance.ts) on synthetic gpt_oss checkpoints (4 experts, 2 per token,
 * alternating sliding (window 4) and full layers, yarn RoPE, sinks) in float, affine q4 and mxfp4 experts; plus the
 * expert-routing and layout specifics. */
import { describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { LocalPipeline } from '../../src/engine/pipeline.ts'
import { parseConfig } from '../../src/model/arch/gpt_oss.ts'
import { parseConfig as parseLlamaConfig } from '../../src/model/arch/llama.ts'
import { checkpointFootprint } from '../../src/model/footprint.ts'
import { readSafetensorsHeader } from '../../src/model/safetensors.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openMlxBackend, probe } from '../../src/tensor/mlx.ts'
import { synthModel } from '../support/synth-models.ts'
import { backend, checkAgainstReference, greedyTokens, PROMPT, runConformance } from './conformance.ts'

const GPT_OSS = { slidingWindow: 4 }

// Quantized on the cpu backend: within 40% of max |logit| (measured up to 12% for q4 and 34% for mxfp4, whose attention,
// router, embedding and head are 8-bit). The error is the cpu decode kernels' int8 rounding of activations in those
// affine layers, which yarn's magnitude factor (scores × 1.8) and the sinks sharpen: with them left in float, the
// quantized experts alone match the reference to 1e-4 (below), and the mlx backend matches it to 1e-3 in every dtype.
// At that error the reference's top token is not always in our top 3 on these random-weight models, so that check is off.
runConformance('gpt_oss', GPT_OSS, {
  dtypes: ['f32', 'bf16', 'q4', 'mxfp4'],
  quantTolerance: 0.4,
  quantTopThree: false,
})

describe('gpt_oss specifics', () => {
  test('config: alternating layer types by default, experts, yarn; bad values are refused', () => {
    const base = {
      model_type: 'gpt_oss',
      hidden_size: 64,
      num_hidden_layers: 4,
      intermediate_size: 64,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 16,
      vocab_size: 100,
    }
    const c = parseConfig({
      ...base,
      num_local_experts: 8,
      num_experts_per_tok: 2,
      rope_scaling: { rope_type: 'yarn', factor: 32, original_max_position_embeddings: 4096 },
    })
    expect(c.slidingLayers).toEqual([true, false, true, false])
    expect(c.layerCaches!.map((l) => l.kind)).toEqual(['window', 'full', 'window', 'full'])
    expect([
      c.numExperts,
      c.expertsPerToken,
      c.slidingWindow,
      c.tieWordEmbeddings,
      c.attentionBias,
      c.ropeScaling.type,
    ]).toEqual([8, 2, 128, false, true, 'yarn'])
    expect(() => parseConfig({ ...base, num_local_experts: 2, num_experts_per_tok: 3 })).toThrow(
      /num_experts_per_tok 3 exceeds num_local_experts 2/,
    )
    expect(() => parseConfig({ ...base, layer_types: ['sliding_attention'] })).toThrow(/'layer_types' must list/)
    // other families still refuse yarn (they would not apply its magnitude factor)
    expect(() =>
      parseLlamaConfig({ ...base, model_type: 'llama', rope_scaling: { rope_type: 'yarn', factor: 4 } }),
    ).toThrow(/rope_scaling type 'yarn' is not supported/)
  })

  for (const dtype of ['q4', 'mxfp4'] as const)
    test(`${dtype} experts with every other module in float match the reference to 1e-4 on the cpu backend`, async () => {
      const float: Record<string, false> = { 'model.embed_tokens': false, lm_head: false }
      for (let l = 0; l < 3; l++)
        for (const m of ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.router'])
          float[`model.layers.${l}.${m}`] = false
      expect(
        checkAgainstReference(await synthModel('gpt_oss', dtype, { ...GPT_OSS, quantOverrides: float }), true),
      ).toBeLessThan(1e-4)
    }, 60_000)

  test('the mxfp4 checkpoint stores experts as u32 codes with u8 scales and no biases, the rest 8-bit affine', async () => {
    const dir = await synthModel('gpt_oss', 'mxfp4', GPT_OSS)
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
    expect(config.quantization['model.layers.0.mlp.experts.gate_proj']).toEqual({
      group_size: 32,
      bits: 4,
      mode: 'mxfp4',
    })
    expect(config.quantization.bits).toBe(8)
    const entries = new Map(readSafetensorsHeader(join(dir, 'model.safetensors')).entries.map((e) => [e.name, e]))
    expect(entries.get('model.layers.0.mlp.experts.up_proj.weight')).toMatchObject({ dtype: 'u32', shape: [4, 128, 8] })
    expect(entries.get('model.layers.0.mlp.experts.up_proj.scales')).toMatchObject({ dtype: 'u8', shape: [4, 128, 2] })
    expect(entries.has('model.layers.0.mlp.experts.up_proj.biases')).toBe(false)
    expect(entries.get('model.layers.0.mlp.router.scales')!.dtype).toBe('bf16')
  })

  test('layer planning weighs the MoE layers by their bytes, and greedy output is varied', async () => {
    const dir = await synthModel('gpt_oss', 'bf16', GPT_OSS)
    const f = checkpointFootprint(dir)
    // each layer: 3 expert stacks of 4 × 128 × 64 bf16 plus attention and router
    expect(f.layerBytes[0]!).toBeGreaterThan(3 * 4 * 128 * 64 * 2)
    const stage = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
    // a decode step reads 2 of each layer's 4 experts: half the expert bytes
    // 3 layers × (3 stacks of 4 × 128 × 64 weights, gate/up biases 4 × 128, down bias 4 × 64), bf16
    const expertBytes = 3 * (3 * 4 * 128 * 64 + 2 * 4 * 128 + 4 * 64) * 2
    expect(stage.weightBytes - stage.streamedBytes).toBe(expertBytes / 2 + 151936 * 64 * 2)
    expect(new Set(await greedyTokens(new LocalPipeline([stage]), PROMPT, 24)).size).toBeGreaterThanOrEqual(6)
    stage.close()
  })

  const mlx = probe()
  test.skipIf(!mlx.available)(
    `on the mlx backend every dtype matches the reference to 1e-3${mlx.available ? '' : ` (skipped: ${mlx.reason})`}`,
    async () => {
      const on = openMlxBackend()
      for (const dtype of ['f32', 'bf16', 'q4', 'mxfp4'] as const)
        expect(checkAgainstReference(await synthModel('gpt_oss', dtype, GPT_OSS), true, 1, on)).toBeLessThan(1e-3)
    },
    60_000,
  )
})
