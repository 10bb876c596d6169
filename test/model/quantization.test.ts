/** MLX affine quantization: the config rules (design/mlx-c.md §4) and the writer's exact layout (LSB-first, scale may be negative). */
import { describe, expect, test } from 'bun:test'
import { parseQuantization } from '../../src/model/quantization.ts'
import { quantizeAffine } from '../../src/model/quantize.ts'
import { dequantize, packBits } from '../reference/kernels.ts'

describe('quantization config', () => {
  const config = parseQuantization({
    quantization: {
      group_size: 64,
      bits: 4,
      mode: 'affine',
      lm_head: { group_size: 64, bits: 8 },
      'model.layers.3.mlp.down_proj': { group_size: 32, bits: 6, mode: 'affine' },
      'model.layers.0.mlp.gate_proj': false,
    },
  })

  test('a module is quantized when its .scales exist (global params) or its path is listed (its own params)', () => {
    expect(config.forModule('model.layers.0.self_attn.q_proj', true)).toEqual({
      groupSize: 64,
      bits: 4,
      mode: 'affine',
    })
    expect(config.forModule('model.layers.0.self_attn.q_proj', false)).toBeNull()
    expect(config.forModule('lm_head', true)).toEqual({ groupSize: 64, bits: 8, mode: 'affine' })
    expect(config.forModule('model.layers.3.mlp.down_proj', false)).toEqual({ groupSize: 32, bits: 6, mode: 'affine' })
  })

  test('mxfp4: globally, per module (a per-module dict without mode is affine, as MLX reads it), and the legacy quant_method', () => {
    const mixed = parseQuantization({
      quantization: {
        group_size: 64,
        bits: 8,
        mode: 'affine',
        'model.layers.0.mlp.experts.up_proj': { group_size: 32, bits: 4, mode: 'mxfp4' },
      },
    })
    expect(mixed.forModule('model.layers.0.mlp.experts.up_proj', true)).toEqual({
      groupSize: 32,
      bits: 4,
      mode: 'mxfp4',
    })
    expect(mixed.forModule('model.layers.0.self_attn.q_proj', true)).toEqual({ groupSize: 64, bits: 8, mode: 'affine' })
    const global = parseQuantization({
      quantization: {
        group_size: 32,
        bits: 4,
        mode: 'mxfp4',
        'model.layers.0.mlp.router': { group_size: 64, bits: 8 },
      },
    })
    expect(global.forModule('a', true)).toEqual({ groupSize: 32, bits: 4, mode: 'mxfp4' })
    expect(global.forModule('model.layers.0.mlp.router', false)).toEqual({ groupSize: 64, bits: 8, mode: 'affine' })
    expect(parseQuantization({ quantization_config: { quant_method: 'mxfp4' } }).forModule('a', true)).toEqual({
      groupSize: 32,
      bits: 4,
      mode: 'mxfp4',
    })
  })

  test('`false` keeps a module in float even if .scales exist', () => {
    expect(config.forModule('model.layers.0.mlp.gate_proj', true)).toBeNull()
  })

  test('no quantization, `quantization_config` as the only key, and a missing mode (= affine)', () => {
    expect(parseQuantization({}).forModule('x', true)).toBeNull()
    expect(parseQuantization({ quantization: false }).forModule('x', true)).toBeNull()
    expect(parseQuantization({ quantization_config: { group_size: 32, bits: 8 } }).forModule('x', true)).toEqual({
      groupSize: 32,
      bits: 8,
      mode: 'affine',
    })
  })

  test('unsupported modes, bits and group sizes fail when config.json is read, naming the module', () => {
    expect(() => parseQuantization({ quantization: { group_size: 32, bits: 4, mode: 'nvfp4' } })).toThrow(
      /mode 'nvfp4'/,
    )
    expect(() => parseQuantization({ quantization: { group_size: 64, bits: 4, mode: 'mxfp4' } })).toThrow(
      /mxfp4 with group_size 64, bits 4/,
    )
    expect(() => parseQuantization({ quantization: { group_size: 64, bits: 7 } })).toThrow(/bits 7/)
    expect(() => parseQuantization({ quantization: { group_size: 48, bits: 4 } })).toThrow(/group_size 48/)
    expect(() => parseQuantization({ quantization: { group_size: 64, bits: 4, lm_head: { bits: 1 } } })).toThrow(
      /quantization\['lm_head'\] has bits 1/,
    )
    expect(() => parseQuantization({ quantization: 4 })).toThrow(/must be an object/)
  })
})

describe('quantizeAffine writes MLX affine layout', () => {
  test('4-bit, max edge: negative scale, bias = max, element 0 in the lowest nibble', () => {
    const w = Float32Array.from({ length: 16 }, (_, k) => k) // |max| > |min|: edge = 15, scale = -1, q = 15 - k
    const q = quantizeAffine(w, 1, 16, 16, 4)
    expect(Array.from(q.scales)).toEqual([-1])
    expect(Array.from(q.biases)).toEqual([15])
    expect(Array.from(q.words)).toEqual([0x89abcdef, 0x01234567])
  })

  test('4-bit, min edge: positive scale, bias = min, the word 0x76543210 unpacks to 0..7', () => {
    const w = Float32Array.from({ length: 16 }, (_, k) => k - 15)
    const q = quantizeAffine(w, 1, 16, 16, 4)
    expect(Array.from(q.scales)).toEqual([1])
    expect(Array.from(q.biases)).toEqual([-15])
    expect(Array.from(q.words)).toEqual([0x76543210, 0xfedcba98])
  })

  test('8-bit: one byte per element, little-endian within the word', () => {
    const w = Float32Array.from({ length: 256 }, (_, k) => k - 255) // min edge: scale 1, bias -255, q = k
    const q = quantizeAffine(w, 1, 256, 256, 8)
    expect([q.scales[0], q.biases[0]]).toEqual([1, -255])
    expect(Array.from(q.words.subarray(0, 2))).toEqual([0x03020100, 0x07060504])
  })

  test('an edge that rounds to q0 = 0 gets bias 0 (mlx affine_quantize)', () => {
    // a constant group: scale falls to the -1e-7 floor, edge/scale = -0.01 rounds to level 0, so the bias is 0, not the edge
    const q = quantizeAffine(
      Float32Array.from({ length: 32 }, () => 1e-9),
      1,
      32,
      32,
      4,
    )
    expect(q.biases[0]).toBe(0)
    expect(q.scales[0]).toBeCloseTo(-1e-7, 12)
  })

  for (const bits of [2, 3, 4, 5, 6, 8])
    test(`${bits}-bit rows pack exactly as the reference LSB-first packer (values may straddle words)`, () => {
      const rows = 3,
        cols = 128,
        groupSize = 32,
        top = 2 ** bits - 1
      const w = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 5)))
      const q = quantizeAffine(w, rows, cols, groupSize, bits)
      expect(q.words.length).toBe((rows * cols * bits) / 32)
      // the levels MLX's formula gives for the chosen scales and biases, packed independently
      const levels = Array.from(w, (v, i) => {
        const g = Math.floor(i / groupSize)
        return Math.min(top, Math.max(0, Math.round((v - q.biases[g]!) / q.scales[g]!)))
      })
      expect(Array.from(q.words)).toEqual(Array.from(packBits(levels, rows, cols, bits)))
      // the edge with the larger magnitude is exact; every value lands within a step of where it was
      const back = dequantize(q.words, q.scales, q.biases, rows, cols, groupSize, bits)
      for (let i = 0; i < w.length; i++)
        expect(Math.abs(back[i]! - w[i]!)).toBeLessThanOrEqual(Math.abs(q.scales[Math.floor(i / groupSize)]!) * 1.5)
      expect(q.scales.some((s) => s < 0)).toBe(true)
      expect(q.scales.some((s) => s > 0)).toBe(true)
    })
})
