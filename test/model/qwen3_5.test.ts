/** Qwen3.5: the conformance suite (test/model/conformance.ts) on synthetic qwen3_5 checkpoints with every 2nd layer full
 * attention (layers 0 and 2 Gated DeltaNet, layer 1 gated attention), so every stage split mixes recurrent and KV caches;
 * plus the recurrent-state rules. */
import { describe, expect, test } from 'bun:test'
import { LocalPipeline } from '../../src/engine/pipeline.ts'
import { parseConfig } from '../../src/model/arch/qwen3_5.ts'
import { checkpointFootprint } from '../../src/model/footprint.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openMlxBackend, probe } from '../../src/tensor/mlx.ts'
import { synthModel } from '../support/synth-models.ts'
import { backend, checkAgainstReference, greedyTokens, PROMPT, runConformance } from './conformance.ts'

const QWEN35 = { fullAttentionInterval: 2 }

const QWEN35_MOE = { ...QWEN35, experts: 4, expertsPerToken: 2 }

runConformance('qwen3_5', QWEN35)
// The MoE variant's q4 checkpoint is not compared with the reference as a whole on the cpu backend: the int8 activation
// rounding of its affine attention and shared-expert layers moves some rows' top-2 expert choices, and a moved choice
// changes the logits by up to 40% (measured) — no bound that says anything. Instead: the q4 routed experts with every
// other module in float match the reference to 1e-4 (below), the float checkpoints match to 1e-4, the mlx backend matches
// every dtype to 1e-3, and the cpu q4 model still passes cached decode, stage composition and batching.
describe('the MoE variant (qwen3_5_moe: routed and shared experts)', () =>
  runConformance('qwen3_5', QWEN35_MOE, { quantReference: false }))

describe('qwen3_5 specifics', () => {
  test('config: nested text_config, rope_parameters, layer kinds; the MoE variant and bad shapes are refused', () => {
    const text = {
      hidden_size: 64,
      num_hidden_layers: 4,
      intermediate_size: 128,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 16,
      linear_num_key_heads: 2,
      linear_num_value_heads: 4,
      linear_key_head_dim: 8,
      linear_value_head_dim: 8,
      rope_parameters: { rope_theta: 1e7, partial_rotary_factor: 0.25 },
    }
    const c = parseConfig({ model_type: 'qwen3_5', text_config: text, quantization: { group_size: 32, bits: 4 } })
    expect(c.layerCaches!.map((l) => l.kind)).toEqual(['recurrent', 'recurrent', 'recurrent', 'full'])
    expect([c.ropeDims, c.ropeTheta, c.weightPrefix, c.quantization.forModule('x', true)]).toEqual([
      4,
      1e7,
      'language_model.',
      { groupSize: 32, bits: 4, mode: 'affine' },
    ])
    expect(parseConfig({ model_type: 'qwen3_5', ...text }).numLayers).toBe(4)
    const moe = parseConfig({
      model_type: 'qwen3_5_moe',
      text_config: {
        ...text,
        num_experts: 8,
        num_experts_per_tok: 2,
        moe_intermediate_size: 32,
        shared_expert_intermediate_size: 64,
      },
    })
    expect(moe.moe).toEqual({ experts: 8, topK: 2, intermediate: 32, sharedIntermediate: 64, normTopk: true })
    expect(() => parseConfig({ model_type: 'qwen3_5', text_config: { ...text, num_experts: 8 } })).toThrow(
      /'num_experts_per_tok' must be a positive integer/,
    )
    expect(() => parseConfig({ model_type: 'qwen3_5', text_config: { ...text, linear_num_key_heads: 3 } })).toThrow(
      /linear_num_value_heads 4 is not a multiple of linear_num_key_heads 3/,
    )
  })

  test('a recurrent stage refuses rows that skip or rewind its state, and restarts a reused slot at position 0', async () => {
    const dir = await synthModel('qwen3_5', 'f32', QWEN35)
    const stage = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
    const first = stage.forward({
      tokens: Int32Array.from(PROMPT),
      slots: new Int32Array(PROMPT.length),
      positions: Int32Array.from(PROMPT.keys()),
    }).logits!
    expect(() =>
      stage.forward({ tokens: Int32Array.of(5), slots: Int32Array.of(0), positions: Int32Array.of(3) }),
    ).toThrow(/recurrent state is at position 9/)
    // a step refused for its input leaves the state's position alone: the sequence continues at 9
    expect(() =>
      stage.forward({ tokens: Int32Array.of(-1), slots: Int32Array.of(0), positions: Int32Array.of(9) }),
    ).toThrow(/token id -1/)
    stage.forward({ tokens: Int32Array.of(5), slots: Int32Array.of(0), positions: Int32Array.of(9) })
    // the same prompt again from position 0 in the same slot: identical logits (no state leaks from the first run)
    const again = stage.forward({
      tokens: Int32Array.from(PROMPT),
      slots: new Int32Array(PROMPT.length),
      positions: Int32Array.from(PROMPT.keys()),
    }).logits!
    expect(Array.from(again)).toEqual(Array.from(first))
    stage.close()
  })

  test('layer planning: recurrent layers hold a fixed state; greedy output is varied', async () => {
    const dir = await synthModel('qwen3_5', 'bf16', QWEN35)
    const f = checkpointFootprint(dir)
    expect(f.layerKvBytes(0, 10)).toBe(f.layerKvBytes(0, 10_000))
    expect(f.layerKvBytes(1, 10_000)).toBe(10 * f.layerKvBytes(1, 1000))
    const stage = ModelStage.load(dir, backend, { slots: 1, maxLen: 64 })
    expect(new Set(await greedyTokens(new LocalPipeline([stage]), PROMPT, 24)).size).toBeGreaterThanOrEqual(6)
    stage.close()
  })

  test('q4 routed experts with every other module in float match the reference to 1e-4 on the cpu backend', async () => {
    const R = 'language_model.model'
    const float: Record<string, false> = { [`${R}.embed_tokens`]: false }
    for (const l of [0, 2])
      for (const m of ['in_proj_qkv', 'in_proj_z', 'in_proj_a', 'in_proj_b', 'out_proj'])
        float[`${R}.layers.${l}.linear_attn.${m}`] = false
    for (const m of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) float[`${R}.layers.1.self_attn.${m}`] = false
    for (const l of [0, 1, 2])
      for (const m of [
        'gate',
        'shared_expert.gate_proj',
        'shared_expert.up_proj',
        'shared_expert.down_proj',
        'shared_expert_gate',
      ])
        float[`${R}.layers.${l}.mlp.${m}`] = false
    expect(
      checkAgainstReference(await synthModel('qwen3_5', 'q4', { ...QWEN35_MOE, quantOverrides: float }), true),
    ).toBeLessThan(1e-4)
  }, 60_000)

  const mlx = probe()
  test.skipIf(!mlx.available)(
    `on the mlx backend every dtype matches the reference to 1e-3${mlx.available ? '' : ` (skipped: ${mlx.reason})`}`,
    async () => {
      const on = openMlxBackend()
      for (const dtype of ['f32', 'bf16', 'q4'] as const)
        for (const spec of [QWEN35, QWEN35_MOE])
          expect(checkAgainstReference(await synthModel('qwen3_5', dtype, spec), true, 1, on)).toBeLessThan(1e-3)
    },
    60_000,
  )
})
