/** The per-stage KV cache: one slot per sequence, allocated, claimed (a remote stage mirrors the head) and released. */
import { describe, expect, test } from 'bun:test'
import { KvCache, kvBytesPerTokenLayer } from '../../src/model/kv-cache.ts'
import { openCpuBackend } from '../../src/tensor/cpu.ts'

const backend = openCpuBackend()

describe('KV cache', () => {
  test('holds [slots, kvHeads, maxLen, headDim] per layer for keys and values', () => {
    const cache = new KvCache(backend, 3, 2, 16, 2, 8)
    expect(cache.keys).toHaveLength(3)
    expect(cache.values[2]!.shape).toEqual([2, 2, 16, 8])
    expect(cache.bytes).toBe(3 * 16 * kvBytesPerTokenLayer(2, 8) * 2)
    for (const t of [...cache.keys, ...cache.values]) backend.free(t)
  })

  test('slots are handed out lowest first, reused after release, and the cache refuses when full', () => {
    const cache = new KvCache(backend, 1, 3, 4, 1, 2)
    expect([cache.allocate(), cache.allocate()]).toEqual([0, 1])
    cache.release(0)
    expect(cache.freeSlots).toBe(2)
    expect(cache.allocate()).toBe(0)
    expect(cache.allocate()).toBe(2)
    expect(() => cache.allocate()).toThrow(/all 3 KV slots are in use/)
    for (const t of [...cache.keys, ...cache.values]) backend.free(t)
  })

  test('claim takes a named slot; double claims and double releases are refused', () => {
    const cache = new KvCache(backend, 1, 2, 4, 1, 2)
    cache.claim(1)
    expect(() => cache.claim(1)).toThrow(/slot 1 is not free/)
    expect(cache.allocate()).toBe(0)
    cache.release(1)
    expect(() => cache.release(1)).toThrow(/slot 1 is not in use/)
    expect(() => cache.release(5)).toThrow(/slot 5 is not in use/)
    for (const t of [...cache.keys, ...cache.values]) backend.free(t)
  })
})
