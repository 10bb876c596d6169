/** `model synth`: a deterministic random-weight checkpoint in exactly the MLX-community layout, loadable by the real loader. */
import { describe, expect, test } from 'bun:test'
import { runCommand } from 'citty'
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import modelCommand from '../../src/cli/model.ts'
import { readSafetensorsHeader } from '../../src/model/safetensors.ts'
import { synthesizeModel } from '../../src/model/synth.ts'
import { TINY, synthModel } from '../support/synth-models.ts'

const fresh = () => mkdtempSync(join(tmpdir(), 'dbc-synth-'))
const sha = (file: string) => new Bun.CryptoHasher('sha256').update(readFileSync(file)).digest('hex')

describe('model synth', () => {
  test('writes config, weights, tokenizer, chat template and generation config in the MLX-community layout', async () => {
    const dir = await synthModel('qwen3', 'q4')
    for (const f of [
      'config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
      'generation_config.json',
    ])
      expect(existsSync(join(dir, f))).toBe(true)
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
    expect(config).toMatchObject({
      model_type: 'qwen3',
      architectures: ['Qwen3ForCausalLM'],
      hidden_size: 64,
      num_hidden_layers: 3,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 16,
      intermediate_size: 128,
      vocab_size: 151936,
      tie_word_embeddings: true,
      eos_token_id: 151645,
      quantization: { group_size: 32, bits: 4, mode: 'affine' },
      quantization_config: { group_size: 32, bits: 4, mode: 'affine' },
    })
    expect(JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8')).eos_token_id).toEqual([151645, 151643])
    expect(JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')).chat_template).toContain('<|im_start|>')
    const { entries, metadata } = readSafetensorsHeader(join(dir, 'model.safetensors'))
    expect(metadata).toEqual({ format: 'mlx' })
    const byName = new Map(entries.map((e) => [e.name, e]))
    // packed u32 [out, in·bits/32]; scales and biases in the model dtype [out, in/group]; norms stay float
    expect(byName.get('model.layers.0.mlp.down_proj.weight')).toMatchObject({ dtype: 'u32', shape: [64, 16] })
    expect(byName.get('model.layers.0.mlp.down_proj.scales')).toMatchObject({ dtype: 'bf16', shape: [64, 4] })
    expect(byName.get('model.layers.0.mlp.down_proj.biases')).toMatchObject({ dtype: 'bf16', shape: [64, 4] })
    expect(byName.get('model.embed_tokens.weight')).toMatchObject({ dtype: 'u32', shape: [151936, 8] })
    expect(byName.get('model.layers.2.self_attn.q_norm.weight')).toMatchObject({ dtype: 'bf16', shape: [16] })
    expect(byName.has('lm_head.weight')).toBe(false)
    // 3 layers × (4 attn × 3 + 3 mlp × 3 + 2 norms + q/k norms) + embedding × 3 + final norm
    expect(entries.length).toBe(3 * (12 + 9 + 2 + 2) + 3 + 1)
  })

  test('llama is untied with llama3 rope scaling; qwen2 has q/k/v biases and no o bias', async () => {
    const llama = readSafetensorsHeader(join(await synthModel('llama', 'f32'), 'model.safetensors')).entries.map(
      (e) => e.name,
    )
    expect(llama).toContain('lm_head.weight')
    const config = JSON.parse(readFileSync(join(await synthModel('llama', 'f32'), 'config.json'), 'utf8'))
    expect(config.rope_scaling.rope_type).toBe('llama3')
    const qwen2 = readSafetensorsHeader(join(await synthModel('qwen2', 'bf16'), 'model.safetensors')).entries.map(
      (e) => e.name,
    )
    expect(qwen2.filter((n) => n.startsWith('model.layers.0.') && n.endsWith('.bias')).sort()).toEqual([
      'model.layers.0.self_attn.k_proj.bias',
      'model.layers.0.self_attn.q_proj.bias',
      'model.layers.0.self_attn.v_proj.bias',
    ])
  })

  test('the same seed writes the same bytes; another seed other weights', async () => {
    const spec = { arch: 'qwen2', dtype: 'q8', ...TINY, groupSize: 32, seed: 3 } as const
    const [a, b, c] = [fresh(), fresh(), fresh()]
    await synthesizeModel(a, spec)
    await synthesizeModel(b, spec)
    await synthesizeModel(c, { ...spec, seed: 4 })
    expect(sha(join(a, 'model.safetensors'))).toBe(sha(join(b, 'model.safetensors')))
    expect(sha(join(a, 'config.json'))).toBe(sha(join(b, 'config.json')))
    expect(sha(join(a, 'model.safetensors'))).not.toBe(sha(join(c, 'model.safetensors')))
  })

  test('large models are split into files with model.safetensors.index.json covering every tensor', async () => {
    const dir = await synthModel('qwen2', 'bf16', { shardBytes: 64 * 1024 })
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(false)
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'))
    const files = [...new Set(Object.values(index.weight_map) as string[])].sort()
    expect(files[0]).toBe(`model-00001-of-${String(files.length).padStart(5, '0')}.safetensors`)
    let total = 0
    for (const f of files) {
      for (const e of readSafetensorsHeader(join(dir, f)).entries) {
        expect(index.weight_map[e.name]).toBe(f)
        total += e.end - e.begin
      }
    }
    expect(index.metadata.total_size).toBe(total)
    expect(Object.keys(index.weight_map).length).toBe(3 * (7 + 3 + 2) + 2) // 7 matrices, q/k/v biases, 2 norms; embedding, final norm
  })

  test('bad specs are refused: a vocab smaller than the tokenizer, GQA that does not divide, groups that do not fit', async () => {
    await expect(synthesizeModel(fresh(), { arch: 'qwen3', dtype: 'f32', ...TINY, vocab: 1000 })).rejects.toThrow(
      /--vocab 1000 is smaller than the tokenizer's 151669 tokens/,
    )
    await expect(synthesizeModel(fresh(), { arch: 'qwen3', dtype: 'f32', ...TINY, kvHeads: 3 })).rejects.toThrow(
      /multiple of --kv-heads 3/,
    )
    await expect(synthesizeModel(fresh(), { arch: 'qwen3', dtype: 'q4', ...TINY, groupSize: 128 })).rejects.toThrow(
      /multiples of the group size 128/,
    )
  })

  test('the CLI writes a model that the flags describe', async () => {
    const out = fresh()
    const flags = [
      '--arch',
      'llama',
      '--layers',
      '2',
      '--hidden',
      '64',
      '--heads',
      '4',
      '--kv-heads',
      '1',
      '--head-dim',
      '16',
      '--intermediate',
      '96',
    ]
    await runCommand(modelCommand, {
      rawArgs: ['synth', out, ...flags, '--dtype', 'q8', '--group-size', '32', '--seed', '9', '--vocab', '151700'],
    })
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))
    expect(config).toMatchObject({
      model_type: 'llama',
      num_hidden_layers: 2,
      num_key_value_heads: 1,
      intermediate_size: 96,
      vocab_size: 151700,
      quantization: { bits: 8, group_size: 32 },
    })
    expect(config.dbcluster_synthetic).toEqual({ seed: 9, dtype: 'q8' })
    await expect(runCommand(modelCommand, { rawArgs: ['synth', fresh(), '--dtype', 'q3'] })).rejects.toThrow(
      /unknown --dtype 'q3'/,
    )
    await expect(runCommand(modelCommand, { rawArgs: ['synth', fresh(), '--layers', '0'] })).rejects.toThrow(
      /--layers must be a positive integer/,
    )
  })
})
