/** KvCache's block save and restore (Backend.kvReadBlock / kvWriteBlock) against the path of generic ops they replaced
 * (kv-block-reference.ts), bit for bit, for every layer kind: full attention, sliding-window rings shorter and longer
 * than a block (partial and missing layers included), a window that covers the context (a full cache), on cpu (f16 and
 * f32 caches) and mlx; recurrent layers are still refused. */
import { describe, expect, test } from 'bun:test'
import { KvCache, type KvBlock, type LayerCacheSpec } from '../../src/model/kv-cache.ts'
import type { Backend, Tensor } from '../../src/tensor/backend.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'
import { openMlxBackend, probe } from '../../src/tensor/mlx.ts'
import { restoreBlocksGeneric, saveBlockGeneric } from './kv-block-reference.ts'

const mlx = probe()
const CASES: [string, () => Backend, 'f16' | 'f32'][] = [
  ['cpu', () => openCpuBackend(), 'f16'],
  ['cpu', () => openCpuBackend(), 'f32'],
  ...(mlx.available ? [['mlx', () => openMlxBackend(), 'f32'] as [string, () => Backend, 'f32']] : []),
]
if (!mlx.available) console.log(`kv block copies on mlx skipped: ${mlx.reason}`)

const B = 64
const MAX_LEN = 320
const SPECS: LayerCacheSpec[] = [
  { kind: 'full', kvHeads: 3, headDim: 16 },
  { kind: 'window', kvHeads: 3, headDim: 16, window: 20 }, // a ring of 40: shorter than a block
  { kind: 'window', kvHeads: 2, headDim: 8, window: 80 }, // a ring of 160
  { kind: 'window', kvHeads: 3, headDim: 16, window: 300 }, // covers the context: a full cache
  { kind: 'full', kvHeads: 1, headDim: 5 },
]

let seed = 1
const random = (n: number) => Float32Array.from({ length: n }, () => (seed = (seed * 48271) % 2147483647) / 2 ** 30 - 1)

/** Writes positions [0, filled) of `slots` (the same values in each), chunks no longer than a ring allows. */
function fill(b: Backend, cache: KvCache, slots: number[], filled: number) {
  const chunk = Math.min(cache.maxStepRows, 64)
  for (let lo = 0; lo < filled; lo += chunk) {
    const n = Math.min(chunk, filled - lo)
    b.scope(() => {
      for (const c of cache.layerCaches) {
        if (c.kind !== 'attention') continue
        const [, H, , D] = c.keys.shape as number[]
        const k = b.fromFloat32(random(n * H! * D!), [n, H!, D!])
        const v = b.fromFloat32(random(n * H! * D!), [n, H!, D!])
        for (const slot of slots) {
          const s = b.fromInt32(new Int32Array(n).fill(slot), [n])
          const p = b.fromInt32(
            Int32Array.from({ length: n }, (_, r) => lo + r),
            [n],
          )
          b.kvWrite(c.keys, k, s, p, { ring: c.ring })
          b.kvWrite(c.values, v, s, p, { ring: c.ring })
        }
      }
    })
  }
}

/** Each layer's keys and values, slot by slot. */
function snapshot(b: Backend, cache: KvCache): Uint8Array[][][] {
  return cache.layerCaches.map((c) => {
    if (c.kind !== 'attention') return []
    return [c.keys, c.values].map((t: Tensor) => {
      const bytes = b.toBytes(t)
      const per = bytes.length / cache.slots
      return Array.from({ length: cache.slots }, (_, s) => bytes.slice(s * per, (s + 1) * per))
    })
  })
}

describe('kv block copies equal the generic path bit for bit', () => {
  for (const [name, open, dtype] of CASES)
    for (const filled of [150, 200, 256, 300])
      test(`${name} (${dtype} caches): blocks of a ${filled}-position prompt, saved and restored`, () => {
        const b = open()
        const cache = new KvCache(b, SPECS, 4, MAX_LEN, dtype)
        // slot 1 holds the prompt; slots 2 and 3 the same other sequence; slot 0 a third
        fill(b, cache, [0], MAX_LEN)
        fill(b, cache, [2, 3], MAX_LEN)
        fill(b, cache, [1], filled)
        const whole = Math.floor(filled / B)
        const direct: KvBlock[] = [],
          generic: KvBlock[] = []
        for (let k = 0; k < whole; k++) {
          direct.push(cache.saveBlock(1, k * B, (k + 1) * B, filled))
          generic.push(saveBlockGeneric(b, cache, 1, k * B, (k + 1) * B, filled))
        }
        let partial = 0,
          missing = 0
        for (let k = 0; k < whole; k++) {
          const [d, g] = [direct[k]!, generic[k]!]
          expect(d.bytes).toBe(g.bytes)
          for (const [i, part] of d.layers.entries()) {
            const ref = g.layers[i]!
            expect(part === null).toBe(ref === null)
            if (!part) {
              missing++
              continue
            }
            expect(part.from).toBe(ref.from)
            if (part.from > d.start) partial++
            const [H, n, D] = part.keys.shape as [number, number, number]
            expect(ref.keys.shape).toEqual([n, H, D])
            b.scope(() => {
              expect(b.toBytes(part.keys)).toEqual(b.toBytes(b.transpose(ref.keys, [1, 0, 2])))
              expect(b.toBytes(part.values)).toEqual(b.toBytes(b.transpose(ref.values, [1, 0, 2])))
            })
          }
        }
        // the rings shorter than the prompt leave some layers of some blocks partial or missing
        if (filled > 200) expect(missing).toBeGreaterThan(0)
        if (filled === 150 || filled === 200) expect(partial).toBeGreaterThan(0)
        const before = snapshot(b, cache)
        cache.restoreBlocks(2, direct)
        restoreBlocksGeneric(b, cache, 3, generic)
        const after = snapshot(b, cache)
        let changed = 0
        for (const [i, tensors] of after.entries())
          for (const [j, slots] of tensors.entries()) {
            expect(slots[2]).toEqual(slots[3]!)
            // the other slots are untouched
            expect(slots[0]).toEqual(before[i]![j]![0]!)
            expect(slots[1]).toEqual(before[i]![j]![1]!)
            if (!Bun.deepEquals(slots[2], before[i]![j]![2])) changed++
          }
        expect(changed).toBeGreaterThan(0)
        for (const block of [...direct, ...generic]) cache.freeBlock(block)
        cache.close()
      })

  for (const [name, open] of CASES.filter(([, , dtype]) => dtype === 'f32'))
    test(`${name}: a cache with recurrent layers still refuses blocks, with the reason`, () => {
      const b = open()
      const cache = new KvCache(
        b,
        [
          { kind: 'full', kvHeads: 2, headDim: 8 },
          { kind: 'recurrent', convChannels: 8, convKernel: 4, heads: 2, keyDim: 4, valueDim: 4 },
        ],
        2,
        128,
      )
      expect(cache.blockReuseRefusal).toContain('recurrent')
      expect(() => cache.saveBlock(0, 0, 64, 64)).toThrow(/recurrent/)
      expect(() => cache.restoreBlocks(0, [{ start: 0, end: 64, layers: [null, null], bytes: 0 }])).toThrow(/recurrent/)
      cache.close()
    })
})
