import { describe, expect, test } from 'bun:test'
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
        b.scope(() => {
          const N = 36,
            K = 1152
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
