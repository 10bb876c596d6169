/** The prefix block store: hash-chain keys, longest-prefix match, namespaces, a bounded pool with LRU eviction that never
 * evicts a pinned block or a block something follows, and its counters. */
import { describe, expect, test } from 'bun:test'
import { ServingMetrics } from '../../src/engine/metrics.ts'
import { PrefixCache } from '../../src/engine/prefix-cache.ts'

const ids = (n: number, seed = 0) => Array.from({ length: n }, (_, i) => (i * 31 + seed * 977) % 1000)

/** A store of 4-token blocks whose payload is the block's index; `freed` lists what eviction released. */
function store(capacityBytes: number, metrics?: ServingMetrics) {
  const freed: string[] = []
  const cache = new PrefixCache<string>({
    capacityBytes,
    blockTokens: 4,
    release: (p) => freed.push(p),
    counters: metrics?.prefixCache,
  })
  const put = (ns: string, tokens: number[], tag: string) => {
    const keys = cache.keys(ns, tokens)
    keys.forEach((k, b) =>
      cache.insert(k, b ? keys[b - 1]! : null, Int32Array.from(tokens.slice(b * 4, b * 4 + 4)), `${tag}${b}`, 10),
    )
  }
  return { cache, freed, put }
}

describe('prefix block store', () => {
  test('hit, partial hit and miss are the longest run of whole blocks from the start', () => {
    const { cache, put } = store(1000)
    const a = ids(14)
    put('m', a, 'a')
    expect(cache.blocks).toBe(3) // 14 tokens: 3 whole blocks, the partial fourth is not kept
    const full = cache.match('m', a)
    expect(full.map((b) => b.payload)).toEqual(['a0', 'a1', 'a2'])
    // the same first 9 tokens, then another: blocks 0 and 1 match, block 2 differs
    const partial = cache.match('m', [...a.slice(0, 9), 999, ...a.slice(10)])
    expect(partial.map((b) => b.payload)).toEqual(['a0', 'a1'])
    expect(cache.match('m', ids(14, 5))).toEqual([])
    // at most maxTokens: a prompt of exactly 12 tokens leaves its last one to compute
    expect(cache.match('m', a.slice(0, 12), 11).map((b) => b.payload)).toEqual(['a0', 'a1'])
  })

  test('a key names the whole prefix: the same block after another start, or in another namespace, is a miss', () => {
    const { cache, put } = store(1000)
    const a = ids(8)
    put('model-x\0tenant:1', a, 'a')
    expect(cache.match('model-x\0tenant:2', a)).toEqual([])
    expect(cache.match('model-y\0tenant:1', a)).toEqual([])
    expect(cache.match('model-x\0tenant:1', [...ids(4, 3), ...a.slice(4)])).toEqual([])
    expect(cache.keys('n', a)).toEqual(cache.keys('n', [...a, 1, 2]).slice(0, 2))
  })

  test('under pressure the least recently used leaf goes first, never a pinned block or a parent', () => {
    const { cache, freed, put } = store(50) // five blocks of 10 bytes
    const a = ids(12, 1),
      b = ids(8, 2)
    put('n', a, 'a') // a0 a1 a2
    put('n', b, 'b') // b0 b1
    const pinned = cache.match('n', b) // uses b: a is now the least recent
    put('n', ids(8, 3), 'c') // needs 20 bytes: a2 then a1 go (leaves first), never b
    expect(freed).toEqual(['a2', 'a1'])
    expect(cache.bytes).toBe(50)
    // everything left is pinned or a parent of something pinned, except a0 and the c chain
    put('n', ids(12, 4), 'd')
    expect(freed.slice(2)).toEqual(['a0', 'c1', 'c0'])
    expect(cache.match('n', b).length).toBe(2)
    cache.unpin(pinned)
    // a block larger than the whole pool is refused, and nothing is evicted for it
    expect(cache.insert('big', null, new Int32Array(4), 'big', 51)).toBe(false)
    expect(cache.evictions).toBe(5)
  })

  test('when every block is pinned an insert is refused rather than evicting one in use', () => {
    const { cache, put, freed } = store(20)
    const a = ids(8)
    put('n', a, 'a')
    const held = cache.match('n', a)
    const [k] = cache.keys('n', ids(4, 9))
    expect(cache.insert(k!, null, Int32Array.from(ids(4, 9)), 'x', 10)).toBe(false)
    expect(freed).toEqual([])
    cache.unpin(held)
    expect(cache.insert(k!, null, Int32Array.from(ids(4, 9)), 'x', 10)).toBe(true)
    expect(() => cache.unpin(held)).toThrow(/not pinned/)
  })

  test('counters: query and hit tokens as recorded, blocks and evictions as they change', () => {
    const metrics = new ServingMetrics()
    const { cache, put } = store(20, metrics)
    put('n', ids(12), 'a') // the third block does not fit beside the first two... it evicts none: both are parents
    cache.record(12, 8)
    const text = metrics.render()
    expect(text).toContain('dbcluster_prefix_cache_query_tokens_total 12')
    expect(text).toContain('dbcluster_prefix_cache_hit_tokens_total 8')
    expect(text).toContain('dbcluster_prefix_cache_blocks 2')
    put('n', ids(4, 7), 'b')
    expect(metrics.render()).toContain('dbcluster_prefix_cache_evictions_total 1')
  })
})
