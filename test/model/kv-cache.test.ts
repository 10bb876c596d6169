/** The per-stage KV cache: one slot per sequence, allocated, claimed (a remote stage mirrors the head) and released. */
import { describe, expect, test } from 'bun:test'
import { fullLayers, KvCache, kvBytesPerTokenLayer } from '../../src/model/kv-cache.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'

const backend = openCpuBackend()

describe('KV cache', () => {
  test("holds [slots, kvHeads, maxLen, headDim] per layer for keys and values, in the backend's KV dtype (f16 on cpu)", () => {
    const cache = new KvCache(backend, fullLayers(3, 2, 8), 2, 16)
    expect(cache.keys).toHaveLength(3)
    expect(cache.values[2]!.shape).toEqual([2, 2, 16, 8])
    expect(backend.kvDtype).toBe('f16')
    expect(cache.keys[0]!.dtype).toBe('f16')
    expect(cache.bytes).toBe(3 * 16 * kvBytesPerTokenLayer(2, 8, 2) * 2)
    cache.close()
  })

  test('slots are handed out lowest first, reused after release, and the cache refuses when full', () => {
    const cache = new KvCache(backend, fullLayers(1, 1, 2), 3, 4)
    expect([cache.allocate(), cache.allocate()]).toEqual([0, 1])
    cache.release(0)
    expect(cache.freeSlots).toBe(2)
    expect(cache.allocate()).toBe(0)
    expect(cache.allocate()).toBe(2)
    expect(() => cache.allocate()).toThrow(/all 3 KV slots are in use/)
    cache.close()
  })

  test('claim takes a named slot; double claims and double releases are refused', () => {
    const cache = new KvCache(backend, fullLayers(1, 1, 2), 2, 4)
    cache.claim(1)
    expect(() => cache.claim(1)).toThrow(/slot 1 is not free/)
    expect(cache.allocate()).toBe(0)
    cache.release(1)
    expect(() => cache.release(1)).toThrow(/slot 1 is not in use/)
    expect(() => cache.release(5)).toThrow(/slot 5 is not in use/)
    cache.close()
  })

  test('a window layer keeps a ring of 2·window positions (flat memory); full layers keep maxLen; steps are capped', () => {
    const cache = new KvCache(
      backend,
      [
        { kind: 'window', kvHeads: 1, headDim: 4, window: 8 },
        { kind: 'full', kvHeads: 2, headDim: 4 },
        { kind: 'window', kvHeads: 1, headDim: 4, window: 64 },
      ],
      2,
      100,
    )
    expect(cache.keys.map((k) => k.shape)).toEqual([
      [2, 1, 16, 4],
      [2, 2, 100, 4],
      [2, 1, 100, 4],
    ])
    expect(cache.layerCaches.map((c) => (c.kind === 'attention' ? [c.window, c.ring] : c.kind))).toEqual([
      [8, true],
      [0, false],
      [64, false],
    ])
    expect(cache.bytes).toBe(2 * 2 * 4 * 2 * (16 + 2 * 100 + 100)) // f16 keys and values
    // a ring of 16 with window 8 holds the keys of 9 consecutive rows of one sequence
    expect(cache.maxStepRows).toBe(9)
    expect(new KvCache(backend, fullLayers(1, 1, 2), 1, 4).maxStepRows).toBe(Infinity)
    cache.close()
  })

  test('a recurrent layer keeps a fixed state per slot; its rows must continue in order or restart at 0', () => {
    const cache = new KvCache(
      backend,
      [
        { kind: 'recurrent', convChannels: 6, convKernel: 4, heads: 2, keyDim: 3, valueDim: 5 },
        { kind: 'full', kvHeads: 1, headDim: 2 },
      ],
      2,
      16,
    )
    const r = cache.recurrent(0)
    expect([r.conv.shape, r.state.shape]).toEqual([
      [2, 3, 6],
      [2, 2, 5, 3],
    ])
    expect(cache.bytes).toBe(4 * (2 * 3 * 6 + 2 * 2 * 5 * 3) + 2 * 2 * 16 * 2 * 2) // f32 states, f16 keys and values
    expect(() => cache.recurrent(1)).toThrow(/keeps keys and values/)
    cache.admitRows(Int32Array.of(0, 0, 1), Int32Array.of(0, 1, 0))
    cache.admitRows(Int32Array.of(1, 0), Int32Array.of(1, 2))
    expect(() => cache.admitRows(Int32Array.of(0), Int32Array.of(5))).toThrow(
      /slot 0: row at position 5, but its recurrent state is at position 3/,
    )
    // a refused step changes nothing; position 0 restarts
    cache.admitRows(Int32Array.of(0, 1), Int32Array.of(3, 0))
    expect(() => cache.admitRows(Int32Array.of(1), Int32Array.of(2))).toThrow(/is at position 1/)
    cache.close()
  })
})
