/** Backend.kvReadBlock / kvWriteBlock (ffi/kv_block.c, and ffi/mlx_glue.c on mlx) on odd shapes: every run of every slot
 * of caches of every dtype, rings wrapping past their end included, against the same copy done on the host; the bytes
 * pass untouched (subnormals and negative zeros too). Runs on cpu, and on mlx where mlx-c and the glue are installed. */
import { describe, expect, test } from 'bun:test'
import type { Backend, DType } from '../../src/tensor/backend.ts'
import { DTYPE_BYTES } from '../../src/tensor/backend.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { openMlxBackend, probe } from '../../src/tensor/mlx.ts'

const mlx = probe()
const BACKENDS: [string, () => Backend][] = [
  ['cpu', () => openCpuBackend()],
  ...(mlx.available ? [['mlx', () => openMlxBackend()] as [string, () => Backend]] : []),
]
if (!mlx.available) console.log(`kv blocks on mlx skipped: ${mlx.reason}`)

/** Random bytes of `count` elements of `dtype`, no NaN or infinity (a float's exponent is never all ones). */
function randomBytes(count: number, dtype: DType, seed: number): Uint8Array {
  const size = DTYPE_BYTES[dtype]
  const out = new Uint8Array(count * size)
  let s = seed >>> 0 || 1
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    out[i] = s & 0xff
  }
  const view = new DataView(out.buffer)
  for (let i = 0; i < count; i++) {
    if (dtype === 'f32' && (view.getUint32(4 * i, true) & 0x7f800000) === 0x7f800000)
      view.setUint32(4 * i, view.getUint32(4 * i, true) ^ 0x40000000, true)
    if (dtype === 'f16' && (view.getUint16(2 * i, true) & 0x7c00) === 0x7c00)
      view.setUint16(2 * i, view.getUint16(2 * i, true) ^ 0x4000, true)
    if (dtype === 'bf16' && (view.getUint16(2 * i, true) & 0x7f80) === 0x7f80)
      view.setUint16(2 * i, view.getUint16(2 * i, true) ^ 0x4000, true)
  }
  if (dtype !== 'u8' && count > 2) {
    // a negative zero and the smallest subnormal, which a conversion or a flush to zero would change
    if (size === 4) (view.setUint32(0, 0x80000000, true), view.setUint32(4, 1, true))
    else (view.setUint16(0, 0x8000, true), view.setUint16(2, 1, true))
  }
  return out
}

/** The host's copy: block[h, r] = cache[slot, h, index(start + r)], index p → p mod L on a ring. */
function hostRead(
  cache: Uint8Array,
  [, H, L, D]: number[],
  size: number,
  slot: number,
  start: number,
  end: number,
  ring: boolean,
) {
  const n = end - start,
    row = D! * size
  const out = new Uint8Array(H! * n * row)
  for (let h = 0; h < H!; h++)
    for (let r = 0; r < n; r++) {
      const at = ring ? (start + r) % L! : start + r
      const from = ((slot * H! + h) * L! + at) * row
      out.set(cache.subarray(from, from + row), (h * n + r) * row)
    }
  return out
}

function hostWrite(
  cache: Uint8Array,
  [, H, L, D]: number[],
  size: number,
  block: Uint8Array,
  slot: number,
  start: number,
  n: number,
  ring: boolean,
) {
  const row = D! * size
  for (let h = 0; h < H!; h++)
    for (let r = 0; r < n; r++) {
      const at = ring ? (start + r) % L! : start + r
      cache.set(block.subarray((h * n + r) * row, (h * n + r + 1) * row), ((slot * H! + h) * L! + at) * row)
    }
}

// [slots, kvHeads, length, headDim]: odd sizes, one head, a row of one element, a single slot
const SHAPES: [number, number, number, number][] = [
  [3, 5, 7, 3],
  [2, 1, 9, 1],
  [1, 3, 4, 17],
]
const DTYPES: DType[] = ['f16', 'f32', 'bf16', 'u8']

describe('kv blocks: a direct copy between a slot of a cache and a block', () => {
  for (const [name, open] of BACKENDS) {
    const b = open()
    for (const dtype of DTYPES)
      test(`${name}: ${dtype}: every run of every slot, read and written back, as the host copies it`, () => {
        const size = DTYPE_BYTES[dtype]
        for (const [k, shape] of SHAPES.entries()) {
          const [S, H, L, D] = shape
          for (const ring of [false, true]) {
            const bytes = randomBytes(S * H * L * D, dtype, 7 + k)
            const cache = b.fromBytes(bytes, shape, dtype)
            // a ring's runs start anywhere (positions beyond its length) and may wrap; a full cache's stay inside it
            for (let slot = 0; slot < S; slot++)
              for (let start = 0; start < (ring ? 2 * L + 1 : L); start++)
                for (let end = start; end <= start + L - (ring ? 0 : start); end++)
                  b.scope(() => {
                    const block = b.kvReadBlock(cache, slot, start, end, { ring })
                    expect(block.shape).toEqual([H, end - start, D])
                    expect(block.dtype).toBe(dtype)
                    expect(b.toBytes(block)).toEqual(hostRead(bytes, shape, size, slot, start, end, ring))
                  })
            // writes: random blocks at a few runs, the whole cache compared after each
            for (const [slot, start, n] of [
              [S - 1, 0, 1],
              [0, L - 2, 2],
              [S >> 1, ring ? L + 3 : 1, L - 1],
              [0, ring ? 2 * L - 1 : 0, L],
            ] as const)
              b.scope(() => {
                if (!ring && start + n > L) return
                const data = randomBytes(H * n * D, dtype, 100 + slot + start + n)
                b.kvWriteBlock(cache, b.fromBytes(data, [H, n, D], dtype), slot, start, { ring })
                hostWrite(bytes, shape, size, data, slot, start, n, ring)
                expect(b.toBytes(cache)).toEqual(bytes)
              })
            b.free(cache)
          }
        }
      })

    test(`${name}: runs outside the cache, a wrong slot or a block of another shape or dtype are refused`, () => {
      b.scope(() => {
        const cache = b.zeros([2, 3, 8, 4], 'f16')
        expect(() => b.kvReadBlock(cache, 2, 0, 4)).toThrow(/slot 2 outside/)
        expect(() => b.kvReadBlock(cache, -1, 0, 4)).toThrow(/slot -1 outside/)
        expect(() => b.kvReadBlock(cache, 0, 6, 9)).toThrow(/do not fit a cache of length 8/)
        expect(() => b.kvReadBlock(cache, 0, 4, 3)).toThrow(/do not fit/)
        expect(() => b.kvReadBlock(cache, 0, 20, 29, { ring: true })).toThrow(/\(ring\)/)
        expect(b.kvReadBlock(cache, 0, 20, 28, { ring: true }).shape).toEqual([3, 8, 4])
        expect(() => b.kvReadBlock(b.zeros([3, 8, 4], 'f16'), 0, 0, 1)).toThrow(/cache must be/)
        const block = (shape: number[], dtype: DType) => b.zeros(shape, dtype)
        expect(() => b.kvWriteBlock(cache, block([3, 2, 4], 'f32'), 0, 0)).toThrow(/block must be f16/)
        expect(() => b.kvWriteBlock(cache, block([2, 2, 4], 'f16'), 0, 0)).toThrow(/block must be/)
        expect(() => b.kvWriteBlock(cache, block([3, 2, 5], 'f16'), 0, 0)).toThrow(/block must be/)
        expect(() => b.kvWriteBlock(cache, block([3, 2, 4], 'f16'), 0, 7)).toThrow(/do not fit/)
        expect(() => b.kvWriteBlock(cache, block([3, 9, 4], 'f16'), 1, 3, { ring: true })).toThrow(/do not fit/)
      })
    })
  }
})
