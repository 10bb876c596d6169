/** Run as a script in a process whose kernel path is chosen by its environment (DBC_NO_AVX512, DBCLUSTER_SHIM): the
 * linear with bf16 weights on odd shapes against the float64 reference, printed as JSON for bf16-linear.test.ts. */
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import * as ref from '../reference/kernels.ts'

export interface Bf16Case {
  N: number
  K: number
  M: number
  x: 'gauss' | 'spread'
  bias: boolean
  /** rms(got − want) / rms(want), and max |got − want| / max |want| */
  rms: number
  max: number
}

export interface Bf16Cases {
  cases: Bf16Case[]
  /** per shape: every row of the 16- to 129-row products equals the same row of the 130-row one, bit for bit */
  rowsIndependentOfM: Record<string, boolean>
}

/** N: tails past the kernels' 8-row tiles; K: tails past 32 (one VDPBF16PS), across the 1,024-wide K blocks. */
export const SHAPES: readonly (readonly [number, number])[] = [
  [1, 1],
  [13, 31],
  [67, 33],
  [37, 100],
  [20, 1030],
  [9, 2049],
]
/** 1, 3, 15: matrix-vector rows; from 16 on, the GEMM (17, 33: odd tiles; 130: past the 128-row block). */
export const ROWS = [1, 3, 15, 16, 17, 33, 130] as const

function input(M: number, K: number, kind: Bf16Case['x'], seed: number): Float32Array {
  const x = ref.randn(M * K, ref.rng(seed), 1)
  // 'spread': magnitudes from 2^-10 to 2^10, where x's rounding to bf16 would show
  if (kind === 'spread') for (let i = 0; i < x.length; i++) x[i]! *= 2 ** ((i % 21) - 10)
  return x
}

export function measure(): Bf16Cases {
  const b = openCpuBackend()
  const cases: Bf16Case[] = []
  const rowsIndependentOfM: Record<string, boolean> = {}
  for (const [N, K] of SHAPES)
    b.scope(() => {
      const w = ref.randn(N * K, ref.rng(N * 7 + K), 0.2)
      const rounded = Float32Array.from(w, ref.roundBf16)
      const wt = b.fromBytes(ref.bf16Bytes(w), [N, K], 'bf16')
      const biasValues = ref.randn(N, ref.rng(N + 1))
      const bias = b.fromFloat32(biasValues, [N])
      for (const kind of ['gauss', 'spread'] as const) {
        const xAll = input(ROWS.at(-1)!, K, kind, K + N)
        const outs = new Map<number, Float32Array>()
        for (const M of ROWS) {
          const x = xAll.subarray(0, M * K)
          const withBias = M % 2 === 1
          const got = b.toFloat32(b.linear(b.fromFloat32(x, [M, K]), wt, withBias ? bias : undefined))
          outs.set(M, got)
          const want = ref.linear(x, rounded, M, N, K, withBias ? biasValues : undefined)
          let num = 0,
            den = 0
          for (let i = 0; i < want.length; i++) ((num += (got[i]! - want[i]!) ** 2), (den += want[i]! ** 2))
          cases.push({
            N,
            K,
            M,
            x: kind,
            bias: withBias,
            rms: den ? Math.sqrt(num / den) : 0,
            max: ref.maxAbsDiff(got, want) / (ref.maxAbs(want) || 1),
          })
        }
        // the bias is added after the sums; compare only bias-free products (even M) with the bias-free 16-row one
        const base = outs.get(16)!
        rowsIndependentOfM[`${N}x${K}/${kind}`] = ROWS.filter((M) => M >= 16 && M % 2 === 0).every((M) => {
          const out = outs.get(M)!
          return base.every((v, i) => Object.is(v, out[i]))
        })
      }
    })
  return { cases, rowsIndependentOfM }
}

if (import.meta.main) console.log(JSON.stringify(measure()))
