/** Bad checkpoints fail with a clear error naming the file or tensor, never a crash or a silent half-load. */
import { describe, expect, test } from 'bun:test'
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeSafetensors } from '../../src/model/safetensors.ts'
import { ModelStage } from '../../src/model/shard.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { ModelTokenizer } from '../../src/model/tokenizer.ts'
import { copyOfModel, synthModel } from '../support/synth-models.ts'

const backend = openCpuBackend()

async function copyOf(arch: 'qwen3' | 'llama' = 'qwen3') {
  const dir = mkdtempSync(join(tmpdir(), 'dbc-bad-'))
  cpSync(await synthModel(arch, 'bf16'), dir, { recursive: true })
  return dir
}

function rewriteHeader(file: string, edit: (header: Record<string, any>) => void) {
  const bytes = readFileSync(file)
  const len = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + len).toString())
  edit(header)
  let json = JSON.stringify(header)
  json += ' '.repeat(Math.max(0, len - json.length))
  if (json.length !== len) throw new Error('edited header must not grow')
  writeFileSync(file, Buffer.concat([bytes.subarray(0, 8), Buffer.from(json), bytes.subarray(8 + len)]))
}

describe('bad checkpoints', () => {
  test('an unsupported model_type lists the supported ones', async () => {
    const dir = await copyOf()
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, model_type: 'mamba' }))
    expect(() => ModelStage.load(dir, backend)).toThrow(/model_type 'mamba' is not supported/)
    try {
      ModelStage.load(dir, backend)
    } catch (error) {
      expect((error as { hint?: string }).hint).toBe(
        'supported: gemma3, gemma3_text, gemma4, gemma4_text, gpt_oss, llama, mistral, qwen2, qwen3, qwen3_5, qwen3_5_moe',
      )
    }
  })

  test('a missing tensor is named', async () => {
    const dir = await copyOf()
    rewriteHeader(join(dir, 'model.safetensors'), (h) => {
      h['model.layers.1.mlp.gate_pro'] = h['model.layers.1.mlp.gate_proj.weight']
      delete h['model.layers.1.mlp.gate_proj.weight']
    })
    expect(() => ModelStage.load(dir, backend)).toThrow(/tensor model\.layers\.1\.mlp\.gate_proj\.weight is missing/)
  })

  test('a mis-shaped tensor is named with both shapes', async () => {
    const dir = await copyOf()
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, intermediate_size: 96 }))
    expect(() => ModelStage.load(dir, backend)).toThrow(/has shape \[128, 64\], expected \[96, 64\]/)
  })

  test('a truncated file and a bad header are caught before any data is read', async () => {
    const dir = await copyOf()
    const file = join(dir, 'model.safetensors')
    truncateSync(file, readFileSync(file).length - 100)
    expect(() => ModelStage.load(dir, backend)).toThrow(/truncated/)
    writeFileSync(file, Buffer.from([255, 255, 255, 255, 0, 0, 0, 0, 1, 2, 3]))
    expect(() => ModelStage.load(dir, backend)).toThrow(/bad header length/)
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(5n)
    writeFileSync(file, Buffer.concat([len, Buffer.from('{nope')]))
    expect(() => ModelStage.load(dir, backend)).toThrow(/header that is not JSON/)
  })

  test('an unsupported dtype and an unclaimed leftover tensor are refused', async () => {
    const dir = await copyOf()
    await writeSafetensors(join(dir, 'extra.safetensors'), [
      { name: 'model.layers.0.mystery.weight', dtype: 'f32', shape: [2], data: new Uint8Array(8) },
    ])
    expect(() => ModelStage.load(dir, backend)).toThrow(
      /match no parameter of qwen3: model\.layers\.0\.mystery\.weight/,
    )
    rewriteHeader(join(dir, 'extra.safetensors'), (h) => {
      h['model.layers.0.mystery.weight'].dtype = 'F64'
    })
    expect(() => ModelStage.load(dir, backend)).toThrow(/unsupported dtype F64/)
  })

  test('a quantized layer whose .scales are missing is refused by dtype, with the reason', async () => {
    const dir = copyOfModel(await synthModel('qwen3', 'q4'))
    rewriteHeader(join(dir, 'model.safetensors'), (h) => {
      h['model.layers.0.mlp.up_proj.scalez'] = h['model.layers.0.mlp.up_proj.scales']
      delete h['model.layers.0.mlp.up_proj.scales']
    })
    expect(() => ModelStage.load(dir, backend)).toThrow(
      /tensor model\.layers\.0\.mlp\.up_proj\.weight is u32, expected f32 or f16 or bf16/,
    )
  })

  test('quantization bits in config.json that do not match the packed weights are a shape error', async () => {
    const dir = copyOfModel(await synthModel('qwen3', 'q4'))
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, quantization: { group_size: 32, bits: 8 } }))
    expect(() => ModelStage.load(dir, backend)).toThrow(
      /model\.embed_tokens\.weight has shape \[151936, 8\], expected \[151936, 16\]/,
    )
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({ ...config, quantization: { group_size: 32, bits: 4, mode: 'nvfp4' } }),
    )
    expect(() => ModelStage.load(dir, backend)).toThrow(/quantization mode 'nvfp4'/)
  })

  test('a file named in the index but absent, and an index without a weight map', async () => {
    const dir = copyOfModel(await synthModel('qwen2', 'bf16', { shardBytes: 64 * 1024 }))
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'))
    const victim = index.weight_map['model.layers.1.mlp.down_proj.weight']
    rmSync(join(dir, victim))
    expect(() => ModelStage.load(dir, backend)).toThrow(new RegExp(`${victim} is listed in the index but missing`))
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {} }))
    expect(() => ModelStage.load(dir, backend)).toThrow(/has no weight_map/)
  })

  test('a layer range outside the model is refused', async () => {
    const dir = await synthModel('qwen3', 'bf16')
    expect(() => ModelStage.load(dir, backend, { lo: 2, hi: 5 })).toThrow(
      /layer range \[2, 5\) is not inside the model's 3 layers/,
    )
    expect(() => ModelStage.load(dir, backend, { lo: 1, hi: 1 })).toThrow(/layer range \[1, 1\)/)
  })

  test('a model without a chat template refuses --chat with a hint', async () => {
    const dir = copyOfModel(await synthModel('qwen3', 'bf16'))
    const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'))
    delete config.chat_template
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config))
    const tokenizer = new ModelTokenizer(dir)
    expect(tokenizer.hasChatTemplate).toBe(false)
    expect(() => tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(/no chat_template/)
    expect(tokenizer.decode(tokenizer.encode('still tokenizes'))).toBe('still tokenizes')
  })

  test('a missing config.json says what to point --model at', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dbc-empty-'))
    expect(() => ModelStage.load(dir, backend)).toThrow(/config\.json not found/)
  })
})
