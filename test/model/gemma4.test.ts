/** Gemma 4: the conformance suite (test/model/conformance.ts) on synthetic gemma4_text checkpoints — dense, and with the
 * MoE block beside the MLP plus keys-as-values full attention — with a sliding window of 4 and every 3rd layer full
 * (global head dim 32, proportional RoPE); plus the config rules and the multimodal layout. */
import { describe, expect, test } from 'bun:test'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { LocalPipeline } from '../../src/engine/pipeline.ts'
import { parseConfig } from '../../src/model/arch/gemma4.ts'
import { readSafetensorsHeader, tensorBytes, writeSafetensors } from '../../src/model/safetensors.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openMlxBackend, probe } from '../../src/tensor/mlx.ts'
import { copyOfModel, synthModel } from '../support/synth-models.ts'
import { backend, checkAgainstReference, greedyTokens, PROMPT, runConformance } from './conformance.ts'

const DENSE = { slidingWindow: 4, slidingWindowPattern: 3 }
const MOE = { ...DENSE, experts: 4, expertsPerToken: 2, kEqV: true }

// Quantized on the cpu backend: within 15% of max |logit| (measured up to 10%) and the reference's top token in our top
// 3: as with Gemma 3, every sublayer output is normed to unit RMS before the residual add, which amplifies the cpu
// kernels' int8 activation rounding. The mlx backend, in float, matches the reference to 1e-3 in every dtype (below).
const QUANT = { quantTolerance: 0.15 }
runConformance('gemma4', DENSE, QUANT)
describe('with the MoE block and keys as values', () => runConformance('gemma4', MOE, QUANT))

describe('gemma4 specifics', () => {
  test('config: layer kinds and head dims per type, MoE, soft-cap; KV sharing and per-layer inputs are refused', () => {
    const base = {
      model_type: 'gemma4_text',
      hidden_size: 64,
      num_hidden_layers: 5,
      intermediate_size: 128,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 16,
      global_head_dim: 32,
      num_kv_shared_layers: 0,
      hidden_size_per_layer_input: 0,
    }
    const c = parseConfig({
      ...base,
      attention_k_eq_v: true,
      num_global_key_value_heads: 1,
      enable_moe_block: true,
      num_experts: 8,
      top_k_experts: 2,
      moe_intermediate_size: 32,
    })
    expect(c.slidingLayers).toEqual([true, true, true, true, false])
    expect(c.layerCaches).toEqual([
      ...Array(4).fill({ kind: 'window', kvHeads: 2, headDim: 16, window: 512 }),
      { kind: 'full', kvHeads: 1, headDim: 32 },
    ])
    expect([c.moe, c.finalLogitSoftcap, c.tieWordEmbeddings, c.rope.full.proportional]).toEqual([
      { experts: 8, topK: 2, intermediate: 32 },
      30,
      true,
      true,
    ])
    expect(() => parseConfig({ ...base, num_kv_shared_layers: 2 })).toThrow(/KV-shared layers or per-layer inputs/)
    expect(() =>
      parseConfig({ model_type: 'gemma4_text', hidden_size: 64, num_hidden_layers: 2, intermediate_size: 8 }),
    ).toThrow(/not supported yet/)
    expect(() =>
      parseConfig({ ...base, enable_moe_block: true, num_experts: 2, top_k_experts: 3, moe_intermediate_size: 8 }),
    ).toThrow(/top_k_experts 3 exceeds num_experts 2/)
    expect(() => parseConfig({ model_type: 'gemma4' })).toThrow(/needs a 'text_config' object/)
  })

  test('the multimodal layout (model_type gemma4, text_config, language_model. names, other towers) loads the text tower', async () => {
    const dir = copyOfModel(await synthModel('gemma4', 'bf16', MOE))
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
    const { vocab_size, ...text } = config
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'gemma4', vocab_size, text_config: text }))
    const entries = readSafetensorsHeader(join(dir, 'model.safetensors')).entries.map((e) => ({
      name: `language_model.${e.name}`,
      dtype: e.dtype,
      shape: e.shape,
      data: tensorBytes(e).slice(),
    }))
    entries.push({ name: 'audio_tower.proj.weight', dtype: 'f32', shape: [2, 2], data: new Uint8Array(16) })
    rmSync(join(dir, 'model.safetensors'))
    await writeSafetensors(join(dir, 'model-00001-of-00001.safetensors'), entries)
    checkAgainstReference(dir, false)
  }, 60_000)

  test('synthetic weights give varied greedy output', async () => {
    const stage = ModelStage.load(await synthModel('gemma4', 'bf16', MOE), backend, { slots: 1, maxLen: 64 })
    expect(new Set(await greedyTokens(new LocalPipeline([stage]), PROMPT, 24)).size).toBeGreaterThanOrEqual(6)
    stage.close()
  })

  const mlx = probe()
  test.skipIf(!mlx.available)(
    `on the mlx backend every dtype matches the reference to 1e-3${mlx.available ? '' : ` (skipped: ${mlx.reason})`}`,
    async () => {
      const on = openMlxBackend()
      for (const dtype of ['f32', 'bf16', 'q4'] as const)
        for (const spec of [DENSE, MOE])
          expect(checkAgainstReference(await synthModel('gemma4', dtype, spec), true, 1, on)).toBeLessThan(1e-3)
    },
    60_000,
  )
})
