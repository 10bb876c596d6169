/** One conformance suite for every Backend implementation, checked against test/reference/kernels.ts (float64). */
import { describe, expect, test } from 'bun:test'
import type { Backend, DType, QuantizedMatrix, Tensor } from '../../src/tensor/backend.ts'
import * as ref from '../reference/kernels.ts'

export interface SuiteOptions {
  /** Tests to skip, with the reason printed. */
  skip?: { reason: string; tests: string[] }[]
}

const BITS = [2, 3, 4, 5, 6, 8]
const GROUP_SIZES = [32, 64, 128]

/** Random MLX-layout quantized matrix with scales of both signs (the quantizer may pick a negative scale). */
export function randomQuantized(
  backend: Backend,
  N: number,
  K: number,
  groupSize: number,
  bits: number,
  seed: number,
  scaleDtype: DType = 'f32',
) {
  const random = ref.rng(seed)
  const q = new Uint8Array(N * K).map(() => Math.floor(random() * 2 ** bits))
  const words = ref.packBits(q, N, K, bits)
  const groups = (N * K) / groupSize
  const scales = new Float32Array(groups).map(() => (random() - 0.4) * 0.1)
  const biases = new Float32Array(groups).map(() => (random() - 0.5) * 0.2)
  const asDtype = (v: Float32Array) =>
    scaleDtype === 'bf16'
      ? Float32Array.from(v, ref.roundBf16)
      : scaleDtype === 'f16'
        ? Float32Array.from(new Float16Array(v))
        : v
  const refScales = asDtype(scales)
  const refBiases = asDtype(biases)
  const toTensor = (v: Float32Array) =>
    scaleDtype === 'bf16'
      ? backend.fromBytes(ref.bf16Bytes(v), [N, K / groupSize], 'bf16')
      : scaleDtype === 'f16'
        ? backend.fromBytes(ref.f16Bytes(v), [N, K / groupSize], 'f16')
        : backend.fromFloat32(v, [N, K / groupSize])
  const matrix: QuantizedMatrix = {
    weight: backend.fromBytes(new Uint8Array(words.buffer), [N, (K * bits) / 32], 'u32'),
    scales: toTensor(scales),
    biases: toTensor(biases),
    groupSize,
    bits,
  }
  return { matrix, words, q, dense: ref.dequantize(words, refScales, refBiases, N, K, groupSize, bits) }
}

export function runBackendSuite(name: string, open: () => Backend, options: SuiteOptions = {}) {
  const skipped = new Map<string, string>()
  for (const s of options.skip ?? []) for (const t of s.tests) skipped.set(t, s.reason)
  const it = (title: string, fn: () => void) => {
    const reason = skipped.get(title)
    if (reason) test.skip(`${title} (skipped: ${reason})`, fn)
    else test(title, fn)
  }
  const b = open()

  describe(`${name} backend`, () => {
    it('pins the MLX bit order: 0x76543210 unpacks to 0..7 at 4 bits', () => {
      b.scope(() => {
        const words = new Uint32Array([0x76543210, 0xfedcba98, 0x76543210, 0xfedcba98])
        const w: QuantizedMatrix = {
          weight: b.fromBytes(new Uint8Array(words.buffer), [1, 4], 'u32'),
          scales: b.fromFloat32(new Float32Array([1]), [1, 1]),
          biases: b.fromFloat32(new Float32Array([0]), [1, 1]),
          groupSize: 32,
          bits: 4,
        }
        const out = Array.from(b.toFloat32(b.dequantize(w)))
        expect(out.slice(0, 16)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
        expect(out.slice(16, 32)).toEqual(out.slice(0, 16))
      })
    })

    it('pins the straddling bit order of 3-bit values', () => {
      b.scope(() => {
        // 32 values 0..7 repeated: the stream is LSB-first, so value k sits at bits [3k, 3k+3) across word edges.
        const q = Array.from({ length: 32 }, (_, k) => k % 8)
        const words = ref.packBits(q, 1, 32, 3)
        expect(words[0]).toBe(0b10_001_000_111_110_101_100_011_010_001_000 >>> 0)
        const w: QuantizedMatrix = {
          weight: b.fromBytes(new Uint8Array(words.buffer), [1, 3], 'u32'),
          scales: b.fromFloat32(new Float32Array([1]), [1, 1]),
          biases: b.fromFloat32(new Float32Array([0]), [1, 1]),
          groupSize: 32,
          bits: 3,
        }
        expect(Array.from(b.toFloat32(b.dequantize(w)))).toEqual(q)
      })
    })

    for (const bits of BITS)
      for (const groupSize of GROUP_SIZES) {
        it(`dequantize and quantized matmul match the reference at ${bits} bits, group ${groupSize}`, () => {
          // rows not a multiple of 16 (the cpu kernels' row blocks: zero rows pad the last) nor of 32 (blocks go in
          // pairs), few and many groups, each scale dtype, with and without a bias
          for (const [N, K, scaleDtype, withBias] of [
            [40, 256, groupSize === 64 ? 'bf16' : 'f32', false],
            [42, 1152, 'f16', true],
            [100, 128, 'bf16', true],
          ] as const)
            b.scope(() => {
              const { matrix, dense } = randomQuantized(
                b,
                N,
                K,
                groupSize,
                bits,
                bits * 1000 + groupSize + K,
                scaleDtype,
              )
              expect(ref.maxAbsDiff(b.toFloat32(b.dequantize(matrix)), dense)).toBeLessThan(1e-6)
              b.prepareQuantized(matrix)
              const bias = withBias ? ref.randn(N, ref.rng(N)) : undefined
              for (const M of [1, 3, 8, 11, 20]) {
                const x = ref.randn(M * K, ref.rng(M + bits), 1)
                const want = ref.linear(x, dense, M, N, K, bias)
                const got = b.toFloat32(
                  b.quantizedLinear(b.fromFloat32(x, [M, K]), matrix, bias && b.fromFloat32(bias, [N])),
                )
                // Kernels for 4/8 bits may quantize x to int8 per group (at any batch size where the CPU has AVX-512
                // VNNI): error ≤ ~1% of the output scale.
                const tol = bits === 4 || bits === 8 ? 1.5e-2 : 1e-5
                expect(ref.maxAbsDiff(got, want) / ref.maxAbs(want)).toBeLessThan(tol)
                // precise keeps x in float: as exact as the other paths
                const precise = b.toFloat32(
                  b.quantizedLinear(b.fromFloat32(x, [M, K]), matrix, bias && b.fromFloat32(bias, [N]), {
                    precise: true,
                  }),
                )
                expect(ref.maxAbsDiff(precise, want) / ref.maxAbs(want)).toBeLessThan(1e-5)
              }
            })
        })
      }

    it('mxfp4 (E2M1 codes, u8 E8M0 scales, no biases): dequantize, matmul and embedding match the reference', () => {
      b.scope(() => {
        const N = 24,
          K = 128
        const random = ref.rng(77)
        const codes = new Uint8Array(N * K).map(() => Math.floor(random() * 16))
        const words = ref.packBits(codes, N, K, 4)
        // scales 2^-6 … 2^2, and one group at the 2^-127 edge MLX reads as a bf16 denormal
        const scales = new Uint8Array((N * K) / 32).map(() => 121 + Math.floor(random() * 9))
        scales[5] = 0
        const matrix: QuantizedMatrix = {
          weight: b.fromBytes(new Uint8Array(words.buffer), [N, K / 8], 'u32'),
          scales: b.fromBytes(scales, [N, K / 32], 'u8'),
          groupSize: 32,
          bits: 4,
        }
        const dense = ref.dequantizeMxfp4(words, scales, N, K)
        expect(ref.fp4e2m1(7)).toBe(6)
        expect(ref.fp4e2m1(9)).toBe(-0.5)
        expect(ref.maxAbsDiff(b.toFloat32(b.dequantize(matrix)), dense)).toBe(0)
        for (const M of [1, 3, 20]) {
          const x = ref.randn(M * K, ref.rng(M), 1)
          const bias = ref.randn(N, ref.rng(M + 1))
          const want = ref.linear(x, dense, M, N, K, bias)
          const got = b.toFloat32(b.quantizedLinear(b.fromFloat32(x, [M, K]), matrix, b.fromFloat32(bias, [N])))
          expect(ref.maxAbsDiff(got, want) / ref.maxAbs(want)).toBeLessThan(1e-5)
        }
        const rows = b.toFloat32(b.quantizedEmbedding(matrix, b.fromInt32(Int32Array.of(3, 0), [2])))
        expect(ref.maxAbsDiff(rows, [...dense.slice(3 * K, 4 * K), ...dense.slice(0, K)])).toBe(0)
        expect(() =>
          b.quantizedLinear(b.fromFloat32(new Float32Array(K), [1, K]), { ...matrix, groupSize: 64 }),
        ).toThrow(/mxfp4 \(no biases\) needs bits 4 and group size 32/)
        expect(() =>
          b.quantizedLinear(b.fromFloat32(new Float32Array(K), [1, K]), {
            ...matrix,
            scales: b.fromFloat32(new Float32Array(N * 4), [N, 4]),
          }),
        ).toThrow(/mxfp4 scales must be u8/)
      })
    })

    it('gatherLinear runs each row through the experts it picked (dense, affine and mxfp4 experts, with bias) and weightedSum combines them', () => {
      b.scope(() => {
        const E = 5,
          N = 16,
          K = 64,
          R = 3,
          k = 2
        const random = ref.rng(31)
        const indices = Int32Array.of(4, 1, 1, 1, 0, 3) // row 1 picks expert 1 twice; expert 2 unused
        const bias = ref.randn(E * N, random)
        const x2 = ref.randn(R * K, random)
        const x3 = ref.randn(R * k * K, random)
        const denseW = ref.randn(E * N * K, random, 0.3)
        const codes = new Uint8Array(E * N * K).map(() => Math.floor(random() * 16))
        const mxWords = ref.packBits(codes, E * N, K, 4)
        const mxScales = new Uint8Array((E * N * K) / 32).map(() => 124 + Math.floor(random() * 4))
        const affine = randomQuantized(b, E * N, K, 32, 4, 5)
        const affine8 = randomQuantized(b, E * N, K, 64, 8, 6, 'bf16')
        const reshape3 = (m: QuantizedMatrix): QuantizedMatrix => ({
          ...m,
          weight: b.reshape(m.weight, [E, N, m.weight.shape[1]!]),
          scales: b.reshape(m.scales, [E, N, m.scales.shape[1]!]),
          biases: m.biases && b.reshape(m.biases, [E, N, m.biases.shape[1]!]),
        })
        const cases: [string, Tensor | QuantizedMatrix, ArrayLike<number>][] = [
          ['dense', b.fromFloat32(denseW, [E, N, K]), denseW],
          ['bf16', b.fromBytes(ref.bf16Bytes(denseW), [E, N, K], 'bf16'), Float32Array.from(denseW, ref.roundBf16)],
          ['affine', reshape3(affine.matrix), affine.dense],
          ['affine 8-bit', reshape3(affine8.matrix), affine8.dense],
          [
            'mxfp4',
            {
              weight: b.fromBytes(new Uint8Array(mxWords.buffer), [E, N, K / 8], 'u32'),
              scales: b.fromBytes(mxScales, [E, N, K / 32], 'u8'),
              groupSize: 32,
              bits: 4,
            },
            ref.dequantizeMxfp4(mxWords, mxScales, E * N, K),
          ],
        ]
        for (const [label, w, dense] of cases) {
          for (const perPair of [false, true]) {
            const x = perPair ? x3 : x2
            const want = new Float64Array(R * k * N)
            for (let r = 0; r < R; r++)
              for (let j = 0; j < k; j++) {
                const e = indices[r * k + j]!
                const xr = Array.from(x.slice((perPair ? r * k + j : r) * K, (perPair ? r * k + j + 1 : r + 1) * K))
                const y = ref.linear(
                  xr,
                  Array.from(dense).slice(e * N * K, (e + 1) * N * K),
                  1,
                  N,
                  K,
                  bias.slice(e * N, (e + 1) * N),
                )
                want.set(y, (r * k + j) * N)
              }
            const got = b.gatherLinear(
              b.fromFloat32(x, perPair ? [R, k, K] : [R, K]),
              w,
              b.fromInt32(indices, [R, k]),
              b.fromFloat32(bias, [E, N]),
            )
            expect(got.shape).toEqual([R, k, N])
            expect([label, ref.maxAbsDiff(b.toFloat32(got), want) / ref.maxAbs(want) < 1e-5]).toEqual([label, true])
          }
        }
        const ys = ref.randn(R * k * N, random)
        const weights = Float32Array.of(0.7, 0.3, 0.5, 0.5, 0.1, 0.9)
        const summed = b.toFloat32(b.weightedSum(b.fromFloat32(ys, [R, k, N]), b.fromFloat32(weights, [R, k])))
        const want = Array.from({ length: R * N }, (_, i) => {
          const r = Math.floor(i / N),
            n = i % N
          return weights[r * k]! * ys[r * k * N + n]! + weights[r * k + 1]! * ys[(r * k + 1) * N + n]!
        })
        expect(ref.maxAbsDiff(summed, want)).toBeLessThan(1e-6)
        expect(() =>
          b.gatherLinear(
            b.fromFloat32(x2, [R, K]),
            b.fromFloat32(denseW, [E, N, K]),
            b.fromInt32(Int32Array.of(0, 1, 2, 3, 4, 5), [R, k]),
          ),
        ).toThrow(/expert 5 outside 0\.\.4/)
        expect(() =>
          b.gatherLinear(b.fromFloat32(x2, [R, K]), b.fromFloat32(denseW, [E, N, K]), b.fromInt32(indices, [k, R])),
        ).toThrow(/x must be \[2, 64\]/)
      })
    })

    it('causalConv and gatedDelta carry per-slot state across calls, interleaved slots, and restart a slot at position 0', () => {
      b.scope(() => {
        const C = 12,
          K = 4,
          Hk = 2,
          Hv = 4,
          Dk = 8,
          Dv = 6,
          T = 7
        const random = ref.rng(55)
        const seq = (width: number, scale = 1) =>
          Array.from({ length: T }, () => Array.from(ref.randn(width, random, scale)))
        const w = ref.randn(C * K, random, 0.5)
        const aLog = ref.randn(Hv, random, 0.5),
          dtBias = ref.randn(Hv, random, 0.5)
        // two sequences (slots 1 and 0), fed as: 3 rows of slot 1; then rows 3..4 of slot 1 interleaved with rows 0..1 of
        // slot 0; then the rest one row at a time
        const data = [0, 1].map(() => ({
          x: seq(C),
          q: seq(Hk * Dk, 0.3),
          k: seq(Hk * Dk, 0.3),
          v: seq(Hv * Dv),
          a: seq(Hv),
          bb: seq(Hv),
        }))
        const calls: [number, number][][] = [
          [
            [1, 0],
            [1, 1],
            [1, 2],
          ],
          [
            [1, 3],
            [0, 0],
            [1, 4],
            [0, 1],
          ],
          ...Array.from({ length: 5 }, (_, i) => [[0, i + 2]] as [number, number][]),
          [[1, 5]],
          [[1, 6]],
        ]
        const convState = b.zeros([2, K - 1, C], 'f32'),
          deltaState = b.zeros([2, Hv, Dv, Dk], 'f32')
        const got = [0, 1].map(() => ({ conv: [] as number[][], y: [] as number[][] }))
        const run = (calls: [number, number][][]) => {
          for (const rows of calls) {
            const pick = (f: (d: (typeof data)[0]) => number[][]) =>
              Float32Array.from(rows.flatMap(([s, t]) => f(data[s]!)[t]!))
            const n = rows.length
            const slots = b.fromInt32(
                Int32Array.from(rows, ([s]) => s),
                [n],
              ),
              positions = b.fromInt32(
                Int32Array.from(rows, ([, t]) => t),
                [n],
              )
            const conv = b.toFloat32(
              b.causalConv(
                b.fromFloat32(
                  pick((d) => d.x),
                  [n, C],
                ),
                b.fromFloat32(w, [C, K]),
                convState,
                slots,
                positions,
              ),
            )
            const y = b.toFloat32(
              b.gatedDelta(
                b.fromFloat32(
                  pick((d) => d.q),
                  [n, Hk, Dk],
                ),
                b.fromFloat32(
                  pick((d) => d.k),
                  [n, Hk, Dk],
                ),
                b.fromFloat32(
                  pick((d) => d.v),
                  [n, Hv, Dv],
                ),
                b.fromFloat32(
                  pick((d) => d.a),
                  [n, Hv],
                ),
                b.fromFloat32(
                  pick((d) => d.bb),
                  [n, Hv],
                ),
                b.fromFloat32(aLog, [Hv]),
                b.fromFloat32(dtBias, [Hv]),
                deltaState,
                slots,
                positions,
              ),
            )
            rows.forEach(([s, t], i) => {
              got[s]!.conv[t] = Array.from(conv.slice(i * C, (i + 1) * C))
              got[s]!.y[t] = Array.from(y.slice(i * Hv * Dv, (i + 1) * Hv * Dv))
            })
          }
        }
        const check = () => {
          for (const s of [0, 1]) {
            const d = data[s]!
            expect(ref.maxAbsDiff(got[s]!.conv.flat(), ref.causalConv(d.x, w, K).flat())).toBeLessThan(1e-5)
            expect(
              ref.maxAbsDiff(
                got[s]!.y.flat(),
                ref.gatedDelta(d.q, d.k, d.v, d.a, d.bb, aLog, dtBias, Hk, Hv, Dk, Dv).flat(),
              ),
            ).toBeLessThan(1e-5)
          }
        }
        run(calls)
        check()
        // the slots now hold state; position 0 starts over, so a second pass gives the same outputs
        run(calls)
        check()
        expect(() =>
          b.causalConv(
            b.fromFloat32(new Float32Array(C), [1, C]),
            b.fromFloat32(w, [C, K]),
            convState,
            b.fromInt32(Int32Array.of(2), [1]),
            b.fromInt32(Int32Array.of(0), [1]),
          ),
        ).toThrow(/slot 2 outside 0\.\.1/)
        expect(() =>
          b.causalConv(
            b.fromFloat32(new Float32Array(C), [1, C]),
            b.fromFloat32(w.slice(0, C * (K - 1)), [C, K - 1]),
            convState,
            b.fromInt32(Int32Array.of(0), [1]),
            b.fromInt32(Int32Array.of(0), [1]),
          ),
        ).toThrow(/state must be f32 \[slots, 2, 12\]/)
      })
    })

    it('quantized matmul adds a bias and handles a leading batch axis', () => {
      b.scope(() => {
        const { matrix, dense } = randomQuantized(b, 16, 64, 32, 4, 7)
        const x = ref.randn(2 * 3 * 64, ref.rng(3))
        const bias = ref.randn(16, ref.rng(4))
        const got = b.quantizedLinear(b.fromFloat32(x, [2, 3, 64]), matrix, b.fromFloat32(bias, [16]))
        expect(got.shape).toEqual([2, 3, 16])
        const want = ref.linear(x, dense, 6, 16, 64, bias)
        expect(ref.maxAbsDiff(b.toFloat32(got), want) / ref.maxAbs(want)).toBeLessThan(1.5e-2)
      })
    })

    for (const dtype of ['f32', 'f16', 'bf16'] as const)
      it(`linear with ${dtype} weights matches the reference for batch sizes 1..40`, () => {
        b.scope(() => {
          const N = 48,
            K = 72
          const w = ref.randn(N * K, ref.rng(11), 0.2)
          const rounded =
            dtype === 'bf16'
              ? Float32Array.from(w, ref.roundBf16)
              : dtype === 'f16'
                ? Float32Array.from(new Float16Array(w))
                : w
          const wt =
            dtype === 'f32'
              ? b.fromFloat32(w, [N, K])
              : b.fromBytes(dtype === 'bf16' ? ref.bf16Bytes(w) : ref.f16Bytes(w), [N, K], dtype)
          const bias = ref.randn(N, ref.rng(12))
          for (const M of [1, 5, 8, 9, 17, 40]) {
            const x = ref.randn(M * K, ref.rng(M))
            const got = b.toFloat32(b.linear(b.fromFloat32(x, [M, K]), wt, b.fromFloat32(bias, [N])))
            expect(ref.maxAbsDiff(got, ref.linear(x, rounded, M, N, K, bias))).toBeLessThan(1e-4)
          }
        })
      })

    it('matmul matches the reference', () => {
      b.scope(() => {
        const a = ref.randn(7 * 13, ref.rng(1)),
          c = ref.randn(13 * 5, ref.rng(2))
        const got = b.toFloat32(b.matmul(b.fromFloat32(a, [7, 13]), b.fromFloat32(c, [13, 5])))
        expect(ref.maxAbsDiff(got, ref.matmul(a, c, 7, 13, 5))).toBeLessThan(1e-5)
      })
    })

    it('embedding gathers float and quantized tables', () => {
      b.scope(() => {
        const table = ref.randn(10 * 64, ref.rng(5))
        const ids = b.fromInt32(new Int32Array([3, 0, 9, 3]), [2, 2])
        const got = b.embedding(b.fromBytes(ref.bf16Bytes(table), [10, 64], 'bf16'), ids)
        expect(got.shape).toEqual([2, 2, 64])
        const values = b.toFloat32(got)
        expect(values[64 * 2 + 5]).toBe(ref.roundBf16(table[9 * 64 + 5]!))
        const { matrix, dense } = randomQuantized(b, 10, 64, 32, 6, 9)
        const qv = b.toFloat32(b.quantizedEmbedding(matrix, ids))
        expect(ref.maxAbsDiff(qv.subarray(0, 64), dense.subarray(3 * 64, 4 * 64))).toBeLessThan(1e-6)
        expect(ref.maxAbsDiff(qv.subarray(128, 192), dense.subarray(9 * 64, 10 * 64))).toBeLessThan(1e-6)
      })
    })

    it('rmsNorm matches the reference', () => {
      b.scope(() => {
        const x = ref.randn(4 * 96, ref.rng(21)),
          w = ref.randn(96, ref.rng(22))
        const got = b.toFloat32(b.rmsNorm(b.fromFloat32(x, [4, 96]), b.fromBytes(ref.bf16Bytes(w), [96], 'bf16'), 1e-5))
        expect(ref.maxAbsDiff(got, ref.rmsNorm(x, Float32Array.from(w, ref.roundBf16), 4, 96, 1e-5))).toBeLessThan(1e-5)
      })
    })

    // widths that leave a remainder after every vector and chunk step, with each weight dtype a checkpoint may hold
    for (const width of [13, 300, 1027])
      it(`rmsNorm matches the reference at width ${width} with f32, f16 and bf16 weights`, () => {
        b.scope(() => {
          const x = ref.randn(3 * width, ref.rng(width), 3),
            w = ref.randn(width, ref.rng(width + 1))
          const weights = [
            { t: b.fromFloat32(w, [width]), exact: w },
            { t: b.fromBytes(ref.f16Bytes(w), [width], 'f16'), exact: Float32Array.from(new Float16Array(w)) },
            { t: b.fromBytes(ref.bf16Bytes(w), [width], 'bf16'), exact: Float32Array.from(w, ref.roundBf16) },
          ]
          for (const { t, exact } of weights) {
            const got = b.toFloat32(b.rmsNorm(b.fromFloat32(x, [3, width]), t, 1e-6))
            expect(ref.maxAbsDiff(got, ref.rmsNorm(x, exact, 3, width, 1e-6))).toBeLessThan(1e-5)
          }
        })
      })

    for (const traditional of [false, true])
      it(`rope (${traditional ? 'traditional' : 'split halves'}) at per-row positions, with base, scale and custom freqs`, () => {
        b.scope(() => {
          const rows = 5,
            heads = 3,
            D = 16
          const x = ref.randn(rows * heads * D, ref.rng(31))
          const positions = [0, 1, 7, 100, 4095]
          const pos = b.fromInt32(Int32Array.from(positions), [rows])
          const xt = b.fromFloat32(x, [rows, heads, D])
          const base = 10000
          const inv = Array.from({ length: 6 }, (_, i) => base ** ((-2 * i) / 12))
          const got = b.toFloat32(b.rope(xt, pos, { dims: 12, traditional, base, scale: 0.5 }))
          expect(ref.maxAbsDiff(got, ref.rope(x, positions, heads, D, 12, traditional, 0.5, inv))).toBeLessThan(2e-3)
          const freqs = Float32Array.from({ length: 8 }, (_, i) => 1 + i * 3)
          const got2 = b.toFloat32(b.rope(xt, pos, { dims: 16, traditional, base, scale: 1, freqs }))
          const inv2 = Array.from(freqs, (f) => 1 / f)
          expect(ref.maxAbsDiff(got2, ref.rope(x, positions, heads, D, 16, traditional, 1, inv2))).toBeLessThan(2e-3)
        })
      })

    const attentionCase = (overrides: Partial<ref.AttentionCase> = {}) => {
      const H = 4,
        KH = 2,
        L = 12,
        D = 8,
        slotsCount = 3
      const random = ref.rng(41)
      return {
        q: ref.randn(4 * H * D, random),
        k: ref.randn(slotsCount * KH * L * D, random),
        v: ref.randn(slotsCount * KH * L * D, random),
        slots: [0, 2, 2, 1],
        positions: [0, 5, 6, 11],
        H,
        KH,
        L,
        D,
        scale: 1 / Math.sqrt(D),
        causal: true,
        ...overrides,
      } satisfies ref.AttentionCase
    }
    const runAttention = (c: ref.AttentionCase, cacheDtype: 'f32' | 'f16' = 'f32') => {
      const rows = c.positions.length
      const slots = c.k.length / (c.KH * c.L * c.D)
      const cache = (x: ArrayLike<number>) => {
        const t = b.fromFloat32(Float32Array.from(x), [slots, c.KH, c.L, c.D])
        return cacheDtype === 'f32' ? t : b.astype(t, cacheDtype)
      }
      return b.toFloat32(
        b.attention(
          b.fromFloat32(Float32Array.from(c.q as ArrayLike<number>), [rows, c.H, c.D]),
          cache(c.k as ArrayLike<number>),
          cache(c.v as ArrayLike<number>),
          b.fromInt32(Int32Array.from(c.slots), [rows]),
          b.fromInt32(Int32Array.from(c.positions), [rows]),
          {
            scale: c.scale,
            causal: c.causal,
            kvLength: c.kvLength,
            window: c.window,
            mask: c.mask
              ? b.fromFloat32(Float32Array.from(c.mask as ArrayLike<number>), [rows, c.maskWidth!])
              : undefined,
            sinks: c.sinks ? b.fromFloat32(Float32Array.from(c.sinks as ArrayLike<number>), [c.H]) : undefined,
          },
        ),
      )
    }
    it('attention: causal GQA over slots at different positions', () => {
      b.scope(() => {
        const c = attentionCase()
        expect(ref.maxAbsDiff(runAttention(c), ref.attention(c))).toBeLessThan(1e-5)
      })
    })
    it('attention: explicit additive mask, sliding window and sink logits', () => {
      b.scope(() => {
        const mask = Array.from({ length: 4 * 12 }, (_, i) => (i % 5 === 1 ? -Infinity : (i % 3) * 0.1))
        for (const c of [
          attentionCase({ mask, maskWidth: 12 }),
          attentionCase({ window: 3 }),
          attentionCase({ sinks: [0.5, -1, 2, 0] }),
          attentionCase({ causal: false, kvLength: 9, mask, maskWidth: 12 }),
        ]) {
          expect(ref.maxAbsDiff(runAttention(c), ref.attention(c))).toBeLessThan(1e-5)
        }
      })
    })
    // f16 caches (the cpu backend's kvDtype): the kernels widen each loaded vector and compute in f32, so the result is the
    // reference's over keys and values rounded to f16, to f32 accuracy. D = 8 takes the generic path; D = 128 the 16-key
    // scores and the two-head value pass (GQA) or the one-head pass (H = KH), over 40 keys (two blocks and a part).
    if (b.kvDtype === 'f16')
      it('attention over f16 caches equals the reference over keys and values rounded to f16', () => {
        b.scope(() => {
          const toF16 = (x: ArrayLike<number>) => Array.from(x, (v) => Math.f16round(v))
          const wide = (H: number, KH: number) => {
            const random = ref.rng(7 + H)
            const L = 48,
              D = 128,
              slots = 2
            return {
              q: ref.randn(3 * H * D, random),
              k: ref.randn(slots * KH * L * D, random),
              v: ref.randn(slots * KH * L * D, random),
              slots: [1, 0, 1],
              positions: [39, 17, 40],
              H,
              KH,
              L,
              D,
              scale: 1 / Math.sqrt(D),
              causal: true,
            } satisfies ref.AttentionCase
          }
          const mask = Array.from({ length: 4 * 12 }, (_, i) => (i % 5 === 1 ? -Infinity : (i % 3) * 0.1))
          for (const c of [
            attentionCase(),
            attentionCase({ mask, maskWidth: 12, window: 3 }),
            attentionCase({ sinks: [0.5, -1, 2, 0] }),
            wide(4, 2),
            wide(4, 4),
            { ...wide(4, 2), window: 20 },
          ]) {
            const rounded = { ...c, k: toF16(c.k as ArrayLike<number>), v: toF16(c.v as ArrayLike<number>) }
            const got = runAttention(c, 'f16')
            expect(ref.maxAbsDiff(got, ref.attention(rounded))).toBeLessThan(1e-5)
            // and the rounding is really there: the f32 cache's answer differs
            expect(ref.maxAbsDiff(got, runAttention(c, 'f32'))).toBeGreaterThan(0)
          }
          // keys and values of different dtypes are refused with the reason
          const one = b.zeros([1, 1, 4, 8], 'f32')
          const q = b.fromFloat32(new Float32Array(8), [1, 1, 8]),
            at = b.fromInt32(Int32Array.of(0), [1])
          expect(() => b.attention(q, b.astype(one, 'f16'), one, at, at, { scale: 1, causal: true })).toThrow(
            /both f32 or both f16/,
          )
        })
      })
    if (b.kvDtype === 'f16')
      it('kvWrite into an f16 cache rounds each value to nearest f16', () => {
        b.scope(() => {
          const cache = b.zeros([2, 2, 4, 3], 'f16')
          const x = Float32Array.from({ length: 2 * 2 * 3 }, (_, i) => (i + 1) / 3 + 1000 * (i % 2))
          b.kvWrite(
            cache,
            b.fromFloat32(x, [2, 2, 3]),
            b.fromInt32(new Int32Array([1, 0]), [2]),
            b.fromInt32(new Int32Array([2, 3]), [2]),
          )
          const c = b.toFloat32(cache)
          const at = (s: number, h: number, p: number) =>
            Array.from(c.subarray(((s * 2 + h) * 4 + p) * 3, ((s * 2 + h) * 4 + p) * 3 + 3))
          const want = Array.from(x, (v) => Math.f16round(v))
          expect([at(1, 0, 2), at(1, 1, 2), at(0, 0, 3), at(0, 1, 3)].flat()).toEqual(want)
          expect(want).not.toEqual(Array.from(x))
          expect(c.filter((v) => v !== 0)).toHaveLength(12)
          // a cache of another dtype is refused with the reason
          expect(() =>
            b.kvWrite(
              b.zeros([2, 2, 4, 3], 'bf16'),
              b.fromFloat32(x, [2, 2, 3]),
              b.fromInt32(new Int32Array([1, 0]), [2]),
              b.fromInt32(new Int32Array([2, 3]), [2]),
            ),
          ).toThrow(/f32 or f16/)
        })
      })
    it('kvWrite places rows at (slot, position)', () => {
      b.scope(() => {
        const cache = b.zeros([2, 2, 4, 3], 'f32')
        const x = Float32Array.from({ length: 2 * 2 * 3 }, (_, i) => i + 1)
        b.kvWrite(
          cache,
          b.fromFloat32(x, [2, 2, 3]),
          b.fromInt32(new Int32Array([1, 0]), [2]),
          b.fromInt32(new Int32Array([2, 3]), [2]),
        )
        const c = b.toFloat32(cache)
        const at = (s: number, h: number, p: number) =>
          Array.from(c.subarray(((s * 2 + h) * 4 + p) * 3, ((s * 2 + h) * 4 + p) * 3 + 3))
        expect(at(1, 0, 2)).toEqual([1, 2, 3])
        expect(at(1, 1, 2)).toEqual([4, 5, 6])
        expect(at(0, 0, 3)).toEqual([7, 8, 9])
        expect(at(0, 1, 3)).toEqual([10, 11, 12])
        expect(c.reduce((s, v) => s + v, 0)).toBe(78)
      })
    })

    it('a ring cache with windowed attention equals a full-length cache with the same window', () => {
      // 2 slots, 23 positions written in steps of up to 3 rows per slot, ring of 6 with window 4 (rows span ≤ 6 − 4)
      const KH = 2,
        H = 4,
        D = 8,
        W = 4,
        RING = 6,
        T = 23
      const random = ref.rng(91)
      const kv = [0, 1].map(() => ({
        k: ref.randn(T * KH * D, random),
        v: ref.randn(T * KH * D, random),
        q: ref.randn(T * H * D, random),
      }))
      b.scope(() => {
        const caches = {
          full: [b.zeros([2, KH, T, D], 'f32'), b.zeros([2, KH, T, D], 'f32')],
          ring: [b.zeros([2, KH, RING, D], 'f32'), b.zeros([2, KH, RING, D], 'f32')],
        }
        for (let start = 0; start < T; start += 3) {
          const rows: [number, number][] = []
          for (const slot of [0, 1]) for (let p = start; p < Math.min(T, start + 3); p++) rows.push([slot, p])
          const pick = (
            src: (s: number) => ArrayLike<number> & { slice(a: number, b: number): ArrayLike<number> },
            width: number,
          ) => Float32Array.from(rows.flatMap(([s, p]) => Array.from(src(s).slice(p * width, (p + 1) * width))))
          const shape = (heads: number) => [rows.length, heads, D]
          const k = b.fromFloat32(
            pick((s) => kv[s]!.k, KH * D),
            shape(KH),
          )
          const v = b.fromFloat32(
            pick((s) => kv[s]!.v, KH * D),
            shape(KH),
          )
          const q = b.fromFloat32(
            pick((s) => kv[s]!.q, H * D),
            shape(H),
          )
          const slots = b.fromInt32(
            Int32Array.from(rows, ([s]) => s),
            [rows.length],
          )
          const positions = b.fromInt32(
            Int32Array.from(rows, ([, p]) => p),
            [rows.length],
          )
          const out = (kind: 'full' | 'ring') => {
            const ring = kind === 'ring'
            b.kvWrite(caches[kind][0]!, k, slots, positions, { ring })
            b.kvWrite(caches[kind][1]!, v, slots, positions, { ring })
            return b.toFloat32(
              b.attention(q, caches[kind][0]!, caches[kind][1]!, slots, positions, {
                scale: 0.3,
                causal: true,
                window: W,
                ring,
              }),
            )
          }
          expect(ref.maxAbsDiff(out('ring'), out('full'))).toBeLessThan(1e-6)
        }
        // rows of one slot spanning more than ring − window positions would read keys the same call overwrote
        const q = b.fromFloat32(new Float32Array(4 * H * D), [4, H, D])
        const spread = b.fromInt32(Int32Array.of(30, 31, 32, 33), [4])
        expect(() =>
          b.attention(q, caches.ring[0]!, caches.ring[1]!, b.fromInt32(new Int32Array(4), [4]), spread, {
            scale: 1,
            causal: true,
            window: W,
            ring: true,
          }),
        ).toThrow(/span positions 30\.\.33, more than the ring of 6 holds with window 4/)
        expect(() =>
          b.attention(q, caches.ring[0]!, caches.ring[1]!, b.fromInt32(new Int32Array(4), [4]), spread, {
            scale: 1,
            causal: true,
            ring: true,
          }),
        ).toThrow(/a ring cache needs causal rows, no mask and a window in 1\.\.6/)
      })
    })

    it('elementwise ops, activations and broadcasting', () => {
      b.scope(() => {
        const x = ref.randn(6 * 10, ref.rng(51), 3),
          y = ref.randn(6 * 10, ref.rng(52)),
          row = ref.randn(10, ref.rng(53))
        const xt = b.fromFloat32(x, [6, 10]),
          yt = b.fromFloat32(y, [6, 10])
        const each = (f: (v: number, i: number) => number) => Array.from(x, f)
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.add(xt, yt)),
            each((v, i) => v + y[i]!),
          ),
        ).toBeLessThan(1e-6)
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.mul(xt, yt)),
            each((v, i) => v * y[i]!),
          ),
        ).toBeLessThan(1e-6)
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.add(xt, b.fromFloat32(row, [10]))),
            each((v, i) => v + row[i % 10]!),
          ),
        ).toBeLessThan(1e-6)
        // a broadcast row whose repeats straddle the ranges the work is split into (37 divides no chunk size)
        const big = ref.randn(3000 * 37, ref.rng(54)),
          row37 = ref.randn(37, ref.rng(55))
        const bigT = b.fromFloat32(big, [3000, 37]),
          row37T = b.fromFloat32(row37, [37])
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.add(bigT, row37T)),
            Float32Array.from(big, (v, i) => v + row37[i % 37]!),
          ),
        ).toBe(0)
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.mul(bigT, row37T)),
            Float32Array.from(big, (v, i) => Math.fround(v * row37[i % 37]!)),
          ),
        ).toBe(0)
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.scale(xt, -0.5)),
            each((v) => v * -0.5),
          ),
        ).toBeLessThan(1e-6)
        expect(ref.maxAbsDiff(b.toFloat32(b.silu(xt)), each(ref.silu))).toBeLessThan(1e-5)
        expect(ref.maxAbsDiff(b.toFloat32(b.gelu(xt)), each(ref.gelu))).toBeLessThan(1e-5)
        expect(ref.maxAbsDiff(b.toFloat32(b.gelu(xt, true)), each(ref.geluTanh))).toBeLessThan(1e-5)
        expect(ref.maxAbsDiff(b.toFloat32(b.tanh(xt)), each(Math.tanh))).toBeLessThan(1e-6)
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.glu(xt, yt, 'silu')),
            each((v, i) => ref.silu(v) * y[i]!),
          ),
        ).toBeLessThan(1e-5)
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.glu(xt, yt, 'gelu')),
            each((v, i) => ref.gelu(v) * y[i]!),
          ),
        ).toBeLessThan(1e-5)
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.glu(xt, yt, 'gelu_approx')),
            each((v, i) => ref.geluTanh(v) * y[i]!),
          ),
        ).toBeLessThan(1e-5)
        // x spans ±~9 (scale 3): both clips of the GPT-OSS SwiGLU are hit
        const wide = b.fromFloat32(
          Float32Array.from(y, (v) => v * 9),
          [6, 10],
        )
        expect(
          ref.maxAbsDiff(
            b.toFloat32(b.glu(xt, yt, 'sigmoid')),
            each((v, i) => y[i]! / (1 + Math.exp(-v))),
          ),
        ).toBeLessThan(1e-6)
        const clipped = b.toFloat32(b.glu(xt, wide, 'swiglu_clipped'))
        expect(
          ref.maxAbsDiff(
            clipped,
            each((v, i) => ref.swigluClipped(v, y[i]! * 9)),
          ) / ref.maxAbs(clipped),
        ).toBeLessThan(1e-6)
        expect(ref.maxAbsDiff(b.toFloat32(b.softmax(xt)), ref.softmax(x, 6, 10))).toBeLessThan(1e-6)
      })
    })

    it('argmax and topk pick the largest values, lowest index on ties', () => {
      b.scope(() => {
        const x = b.fromFloat32(new Float32Array([1, 5, 5, -2, 0, 3, 9, 9, 9, 1]), [2, 5])
        expect(Array.from(b.toInt32(b.argmax(x)))).toEqual([1, 1])
        const { values, indices } = b.topk(x, 3)
        expect(Array.from(b.toFloat32(values))).toEqual([5, 5, 1, 9, 9, 9])
        expect(Array.from(b.toInt32(indices))).toEqual([1, 2, 0, 1, 2, 3])
      })
    })

    it('astype rounds to bf16 and f16 and back', () => {
      b.scope(() => {
        const x = ref.randn(64, ref.rng(61), 100)
        const t = b.fromFloat32(x, [64])
        expect(Array.from(b.toFloat32(b.astype(t, 'bf16')))).toEqual(Array.from(x, ref.roundBf16))
        expect(Array.from(b.toFloat32(b.astype(t, 'f16')))).toEqual(Array.from(new Float16Array(x), Number))
      })
    })

    it('reshape, transpose, slice and concat', () => {
      b.scope(() => {
        const x = b.fromFloat32(
          Float32Array.from({ length: 24 }, (_, i) => i),
          [2, 3, 4],
        )
        expect(b.reshape(x, [6, 4]).shape).toEqual([6, 4])
        const t = b.transpose(x, [2, 0, 1])
        expect(t.shape).toEqual([4, 2, 3])
        expect(Array.from(b.toFloat32(t)).slice(0, 6)).toEqual([0, 4, 8, 12, 16, 20])
        expect(Array.from(b.toFloat32(b.slice(x, 1, 1, 3))).slice(0, 4)).toEqual([4, 5, 6, 7])
        const c = b.concat(x, b.slice(x, 2, 0, 1), 2)
        expect(c.shape).toEqual([2, 3, 5])
        expect(Array.from(b.toFloat32(c)).slice(0, 5)).toEqual([0, 1, 2, 3, 0])
      })
    })

    it('rejects bad input with clear errors instead of crashing', () => {
      b.scope(() => {
        const x = b.fromFloat32(new Float32Array(6), [2, 3])
        const w = b.fromFloat32(new Float32Array(8), [2, 4])
        expect(() => b.linear(x, w)).toThrow(/shape mismatch/)
        expect(() => b.linear(x, b.fromInt32(new Int32Array(6), [2, 3]))).toThrow(/float tensor/)
        expect(() => b.astype(x, 'u8')).toThrow(/float dtypes/)
        expect(() => b.add(x, b.fromFloat32(new Float32Array(2), [2]))).toThrow(/shape mismatch/)
        expect(() => b.fromFloat32(new Float32Array(5), [2, 3])).toThrow(/do not fill/)
        expect(() => b.reshape(x, [4, 2])).toThrow(/cannot reshape/)
        expect(() => b.embedding(w, b.fromInt32(new Int32Array([2]), [1]))).toThrow(/outside vocab/)
        const { matrix } = randomQuantized(b, 4, 64, 32, 4, 1)
        expect(() => b.quantizedLinear(x, matrix)).toThrow(/shape mismatch/)
        expect(() => b.quantizedLinear(b.fromFloat32(new Float32Array(64), [1, 64]), { ...matrix, bits: 7 })).toThrow(
          /unsupported bits 7/,
        )
        expect(() =>
          b.quantizedLinear(b.fromFloat32(new Float32Array(64), [1, 64]), { ...matrix, groupSize: 48 }),
        ).toThrow(/group size 48/)
        const cache = b.zeros([1, 1, 4, 3], 'f32')
        const pos = b.fromInt32(new Int32Array([9]), [1])
        expect(() =>
          b.kvWrite(cache, b.fromFloat32(new Float32Array(3), [1, 1, 3]), b.fromInt32(new Int32Array([0]), [1]), pos),
        ).toThrow(/outside the cache length/)
        const freed = b.fromFloat32(new Float32Array(6), [2, 3])
        b.free(freed)
        expect(() => b.add(freed, x)).toThrow(/used after it was freed/)
        expect(() => b.free(freed)).not.toThrow()
      })
    })

    it('keeps resident memory flat over thousands of op calls', () => {
      const before = b.liveBytes()
      const w = b.fromFloat32(ref.randn(256 * 256, ref.rng(71)), [256, 256])
      const x = b.fromFloat32(ref.randn(4 * 256, ref.rng(72)), [4, 256])
      const step = () =>
        b.scope(() => {
          const h = b.linear(x, w)
          const n = b.rmsNorm(h, b.fromFloat32(new Float32Array(256).fill(1), [256]), 1e-6)
          return b.toFloat32(b.softmax(b.add(n, h)))[0]
        })
      for (let i = 0; i < 200; i++) step()
      const rssWarm = process.memoryUsage().rss
      const liveWarm = b.liveBytes()
      for (let i = 0; i < 3000; i++) step()
      Bun.gc(true)
      expect(b.liveBytes()).toBe(liveWarm)
      expect(process.memoryUsage().rss - rssWarm).toBeLessThan(48 * 1024 * 1024)
      b.free(w)
      b.free(x)
      expect(b.liveBytes()).toBe(before)
    })

    it('scope keeps returned tensors and frees the rest', () => {
      const before = b.liveBytes()
      const kept = b.scope(() => {
        b.fromFloat32(new Float32Array(1000), [1000])
        const inner = b.scope(() => ({ a: b.fromFloat32(new Float32Array(10), [10]) }))
        return [inner.a]
      })
      expect(b.liveBytes() - before).toBe(40)
      b.free(kept[0]!)
      expect(b.liveBytes()).toBe(before)
    })
  })
}
