/** config.json is parsed once, at the edge: defaults applied, family defaults, rope variants, and named failures. */
import { describe, expect, test } from 'bun:test'
import * as llama from '../../src/model/arch/llama.ts'
import * as qwen2 from '../../src/model/arch/qwen2.ts'
import { ARCHITECTURES, architectureFor } from '../../src/model/registry.ts'
import { ropeOptions } from '../../src/model/rope.ts'

const BASE = {
  model_type: 'llama',
  hidden_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  intermediate_size: 128,
  vocab_size: 1000,
}

describe('decoder config', () => {
  test('defaults: kv heads = heads, head_dim = hidden / heads, tied, no bias, rope 10000, no quantization', () => {
    const c = llama.parseConfig(BASE)
    expect(c).toMatchObject({
      numKvHeads: 4,
      headDim: 16,
      tieWordEmbeddings: true,
      attentionBias: false,
      ropeTheta: 10000,
      rmsNormEps: 1e-6,
      eosTokenIds: [],
    })
    expect(c.ropeScaling.type).toBe('default')
    expect(c.quantization.forModule('lm_head', true)).toBeNull()
  })

  test('explicit values win; eos may be a number or a list; unknown keys are ignored', () => {
    const c = qwen2.parseConfig({
      ...BASE,
      num_key_value_heads: 2,
      head_dim: 32,
      tie_word_embeddings: false,
      eos_token_id: [1, 2],
      future_key: { x: 1 },
    })
    expect(c).toMatchObject({
      numKvHeads: 2,
      headDim: 32,
      tieWordEmbeddings: false,
      attentionBias: true,
      eosTokenIds: [1, 2],
    })
    expect(llama.parseConfig({ ...BASE, eos_token_id: 7 }).eosTokenIds).toEqual([7])
  })

  test('a missing or bad key is named', () => {
    const { hidden_size: _, ...noHidden } = BASE
    expect(() => llama.parseConfig(noHidden)).toThrow(/'hidden_size' must be a positive integer, got undefined/)
    expect(() => llama.parseConfig({ ...BASE, num_key_value_heads: 3 })).toThrow(
      /not a multiple of num_key_value_heads 3/,
    )
    expect(() => llama.parseConfig({ ...BASE, num_attention_heads: 5 })).toThrow(
      /head_dim 12.8 must be an even integer/,
    )
    expect(() => llama.parseConfig({ ...BASE, rope_theta: 'big' })).toThrow(/'rope_theta' must be a positive number/)
    expect(() => llama.parseConfig({ ...BASE, rope_scaling: { rope_type: 'yarn', factor: 4 } })).toThrow(
      /rope_scaling type 'yarn' is not supported/,
    )
  })

  test('the registry is one record with the mistral alias, and an unknown type lists the supported ones', () => {
    expect([...ARCHITECTURES.keys()].sort()).toEqual([
      'gemma3',
      'gemma3_text',
      'gemma4',
      'gemma4_text',
      'gpt_oss',
      'llama',
      'mistral',
      'qwen2',
      'qwen3',
      'qwen3_5',
      'qwen3_5_moe',
    ])
    expect(architectureFor('gemma3')).toBe(architectureFor('gemma3_text'))
    expect(architectureFor('mistral')).toBe(architectureFor('llama'))
    expect(() => architectureFor('gpt2')).toThrow(/model_type 'gpt2' is not supported/)
    expect(() => architectureFor(undefined)).toThrow(/model_type 'undefined'/)
    // names an object's prototype has are not architectures
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty'])
      expect(() => architectureFor(name)).toThrow(`model_type '${name}' is not supported`)
  })
})

describe('rope variants', () => {
  test('default: base only; linear: scale = 1/factor', () => {
    expect(ropeOptions(llama.parseConfig(BASE))).toEqual({ dims: 16, traditional: false, base: 10000, scale: 1 })
    expect(ropeOptions(llama.parseConfig({ ...BASE, rope_scaling: { type: 'linear', factor: 4 } })).scale).toBe(0.25)
  })

  test('llama3: high frequencies kept, low frequencies stretched by factor, a smooth ramp between (Llama 3.1 8B values)', () => {
    const c = llama.parseConfig({
      ...BASE,
      hidden_size: 4096,
      num_attention_heads: 32,
      rope_theta: 500000,
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8192,
      },
    })
    const { freqs, dims } = ropeOptions(c)
    expect(dims).toBe(128)
    const period = (i: number) => 500000 ** ((2 * i) / 128)
    expect(freqs![0]).toBeCloseTo(period(0), 5) // wavelength 2π < 2048: unchanged
    expect(freqs![63]! / period(63)).toBeCloseTo(8, 3) // wavelength > 8192: stretched by the factor
    // in between, 2π·period between 2048 and 8192: period / ((1 - s)/8 + s), s = (8192/wavelength - 1)/3
    for (let i = 0; i < 64; i++) {
      const wavelength = 2 * Math.PI * period(i)
      if (wavelength > 2048 && wavelength < 8192) {
        const s = (8192 / wavelength - 1) / 3
        expect(freqs![i]! / (period(i) / ((1 - s) / 8 + s))).toBeCloseTo(1, 5)
      }
    }
  })
})
