import { describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import * as ref from '../reference/kernels.ts'
import { randomQuantized, runBackendSuite } from './backend.suite.ts'

runBackendSuite('cpu', () => openCpuBackend())

describe('cpu quantized linear', () => {
  // A request's tokens must not depend on which other requests shared its decode step: each row of a batched 4- or
  // 8-bit product is summed in the same order as that row alone (exact integer dots, then the same float steps).
  for (const bits of [4, 8])
    for (const groupSize of [64, 128])
      test(`rows of a batch equal the rows computed alone, bit for bit (${bits} bits, group ${groupSize})`, () => {
        const b = openCpuBackend()
        // N = 100: decode rows go through tiles of 2 row blocks and a lone block, batches through tiles of 2 blocks × 4 rows
        for (const [N, K] of [
          [36, 1152],
          [100, 1024],
        ] as const)
          b.scope(() => {
            const { matrix } = randomQuantized(b, N, K, groupSize, bits, 7 + bits + groupSize, 'bf16')
            for (const M of [2, 5, 8, 12]) {
              const x = ref.randn(M * K, ref.rng(M), 1)
              const batched = b.toFloat32(b.quantizedLinear(b.fromFloat32(x, [M, K]), matrix))
              for (let r = 0; r < M; r++) {
                const alone = b.toFloat32(b.quantizedLinear(b.fromFloat32(x.slice(r * K, (r + 1) * K), [1, K]), matrix))
                expect(Array.from(batched.subarray(r * N, (r + 1) * N))).toEqual(Array.from(alone))
              }
            }
          })
      })
})

describe('cpu kernel layout of 4-bit weights', () => {
  // AVX-512 VNNI machines repack 4-bit weights once (16 rows to a vector) and keep the copy with the weight
  const vnni =
    /\bavx512_vnni\b/.test(readFileSync('/proc/cpuinfo', 'utf8')) &&
    !['1', 'true'].includes(process.env.DBC_NO_AVX512 ?? '')
  test(`is made once, counted in live bytes and freed with the weight (${vnni ? 'AVX-512 VNNI: repacked' : 'no AVX-512 VNNI: none'})`, () => {
    const b = openCpuBackend()
    const N = 40,
      K = 256
    const before = b.liveBytes()
    const { matrix } = randomQuantized(b, N, K, 64, 4, 11, 'bf16')
    const loaded = b.liveBytes()
    b.prepareQuantized(matrix)
    // 3 blocks of 16 rows (the last padded): packed nibbles, then bf16 scales and biases
    const layout = vnni ? 3 * 16 * (K / 2) + 2 * 3 * 16 * (K / 64) * 2 : 0
    expect(b.liveBytes() - loaded).toBe(layout)
    const x = b.fromFloat32(ref.randn(2 * K, ref.rng(5)), [2, K])
    b.free(b.quantizedLinear(x, matrix))
    b.prepareQuantized(matrix)
    b.free(x)
    expect(b.liveBytes() - loaded).toBe(layout)
    for (const t of [matrix.weight, matrix.scales, matrix.biases!]) b.free(t)
    expect(b.liveBytes()).toBe(before)
  })
})

describe('cpu zeroed tensors', () => {
  // KV caches (32 MiB and more) are mapped and populated by the kernel in one call rather than zeroed page by page
  test('a large zeroed tensor reads as zeros, is counted in live bytes and frees them', () => {
    const b = openCpuBackend()
    const MiB = 1024 * 1024
    const before = b.liveBytes()
    const cache = b.zeros([64, 1024, 1024], 'f32') // 256 MiB
    expect(b.liveBytes() - before).toBe(256 * MiB)
    b.scope(() => {
      for (const at of [0, 63]) {
        const row = b.toFloat32(b.slice(cache, 0, at, at + 1))
        expect(row.length).toBe(MiB)
        expect(row.every((v) => v === 0)).toBe(true)
      }
    })
    b.free(cache)
    expect(b.liveBytes()).toBe(before)
  })

  test('a zeroed tensor larger than the address space is a clear error that leaves nothing behind', () => {
    const b = openCpuBackend()
    const before = b.liveBytes()
    expect(() => b.zeros([2 ** 30, 2 ** 30], 'u8')).toThrow(/out of memory mapping 1152921504606846976 zeroed bytes/)
    expect(b.liveBytes()).toBe(before)
  })

  test('reading into a buffer too short for the tensor is refused', () => {
    const b = openCpuBackend()
    b.scope(() => {
      const t = b.fromFloat32(
        Float32Array.from({ length: 16 }, (_, i) => i),
        [4, 4],
      )
      expect(() => b.toFloat32(t, new Float32Array(15))).toThrow(/buffer of 15 values for a tensor of 16/)
      const into = new Float32Array(20).fill(-1)
      expect(Array.from(b.toFloat32(t, into))).toEqual(Array.from({ length: 16 }, (_, i) => i))
      expect(into[16]).toBe(-1) // the rest untouched
    })
  })
})

describe('cpu prepareQuantized', () => {
  test('a matrix whose scales do not fit its group size is refused, as quantizedLinear refuses it', () => {
    const b = openCpuBackend()
    b.scope(() => {
      const { matrix } = randomQuantized(b, 32, 256, 64, 4, 3, 'bf16')
      expect(() => b.prepareQuantized({ ...matrix, groupSize: 128 })).toThrow(
        /quantized_prepare: scales\/biases must be \[32, 2\]/,
      )
      expect(() => b.prepareQuantized({ ...matrix, bits: 7 })).toThrow(/quantized_prepare: unsupported bits 7/)
    })
  })
})
