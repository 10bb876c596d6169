/** The prefix-cache block copy as it was before Backend.kvReadBlock/kvWriteBlock: generic Backend ops (slice, concat,
 * transpose; astype and kvWrite back). Kept as the oracle the direct copy must match bit for bit, and as the baseline
 * its benchmark (kv-block-bench.ts) runs beside it. Blocks are [n, kvHeads, headDim] here; KvCache's are
 * [kvHeads, n, headDim]. */
import type { KvBlock, KvCache } from '../../src/model/kv-cache.ts'
import { DTYPE_BYTES, numel, type Backend, type Tensor } from '../../src/tensor/backend.ts'

export function saveBlockGeneric(
  b: Backend,
  cache: KvCache,
  slot: number,
  start: number,
  end: number,
  filled: number,
): KvBlock {
  let bytes = 0
  const layers = cache.layerCaches.map((c) => {
    if (c.kind !== 'attention') return null
    const length = c.keys.shape[2]!
    const from = c.ring ? Math.max(start, filled - length) : start
    if (from >= end) return null
    const copy = (t: Tensor) =>
      b.scope(() => {
        const [slots, heads, , dim] = t.shape as [number, number, number, number]
        const at = c.ring ? from % length : from
        const n = end - from
        const rows = (lo: number, hi: number) =>
          b.slice(b.slice(b.reshape(t, [slots * heads, length, dim]), 0, slot * heads, (slot + 1) * heads), 1, lo, hi)
        const run = at + n <= length ? rows(at, at + n) : b.concat(rows(at, length), rows(0, at + n - length), 1)
        return b.keep(b.transpose(run, [1, 0, 2]))
      })
    const keys = copy(c.keys)
    const values = copy(c.values)
    bytes += 2 * numel(keys.shape) * DTYPE_BYTES[keys.dtype]
    return { keys, values, from }
  })
  return { start, end, layers, bytes }
}

export function restoreBlocksGeneric(b: Backend, cache: KvCache, slot: number, blocks: readonly KvBlock[]): void {
  for (const block of blocks)
    b.scope(() => {
      for (const [i, c] of cache.layerCaches.entries()) {
        const part = block.layers[i]
        if (c.kind !== 'attention' || !part) continue
        const n = block.end - part.from
        const slots = b.fromInt32(new Int32Array(n).fill(slot), [n])
        const positions = b.fromInt32(
          Int32Array.from({ length: n }, (_, r) => part.from + r),
          [n],
        )
        b.kvWrite(c.keys, b.astype(part.keys, 'f32'), slots, positions, { ring: c.ring })
        b.kvWrite(c.values, b.astype(part.values, 'f32'), slots, positions, { ring: c.ring })
      }
    })
}
