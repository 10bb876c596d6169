/** Run as a script in a process whose kernel path is chosen by its environment (DBC_NO_AVX512, DBCLUSTER_SHIM): the
 * 4/8-bit quantized linear on odd shapes against the float64 reference, printed as JSON lines for
 * quant-fidelity.test.ts. */
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import * as ref from '../reference/kernels.ts'
import { randomQuantized } from './backend.suite.ts'

export interface FidelityCase {
  bits: number
  groupSize: number
  N: number
  K: number
  M: number
  /** 'gauss': N(0, 1); 'outliers': N(0, 1) with one value in 64 ×12 (RMSNorm outputs and SwiGLU products look so) */
  x: 'gauss' | 'outliers'
  /** rms(got − want) / rms(want), and max |got − want| / max |want| */
  rms: number
  max: number
}

/** N: row tails past the kernels' 4- and 16-row blocks; K: 1, 3 and 5 groups and an odd number of 64-blocks. */
export const SHAPES: readonly (readonly [number, number])[] = [
  [37, 128],
  [100, 384],
  [21, 640],
]

function input(M: number, K: number, kind: FidelityCase['x'], seed: number): Float32Array {
  const x = ref.randn(M * K, ref.rng(seed), 1)
  if (kind === 'outliers') for (let i = 17; i < x.length; i += 64) x[i]! *= 12
  return x
}

export function measure(): FidelityCase[] {
  const b = openCpuBackend()
  const out: FidelityCase[] = []
  for (const bits of [4, 8])
    for (const groupSize of [32, 64, 128])
      for (const [N, K] of SHAPES) {
        if (K % groupSize) continue
        b.scope(() => {
          const { matrix, dense } = randomQuantized(b, N, K, groupSize, bits, bits * 7 + groupSize + N, 'bf16')
          b.prepareQuantized(matrix)
          for (const M of [1, 3, 8, 11])
            for (const kind of ['gauss', 'outliers'] as const) {
              const x = input(M, K, kind, M * 31 + K)
              const want = ref.linear(x, dense, M, N, K)
              const got = b.toFloat32(b.quantizedLinear(b.fromFloat32(x, [M, K]), matrix))
              let num = 0,
                den = 0
              for (let i = 0; i < want.length; i++) ((num += (got[i]! - want[i]!) ** 2), (den += want[i]! ** 2))
              out.push({
                bits,
                groupSize,
                N,
                K,
                M,
                x: kind,
                rms: Math.sqrt(num / den),
                max: ref.maxAbsDiff(got, want) / ref.maxAbs(want),
              })
            }
        })
      }
  return out
}

if (import.meta.main) console.log(JSON.stringify(measure()))
