import { describe, expect, test } from 'bun:test'
import { makeSampler, samplingParams } from '../../src/model/sampler.ts'
import { StopMatcher } from '../../src/engine/stop.ts'

const logits = Float32Array.from([1, 4, 3.9, 0, -2, 3.5])

function counts(params: Parameters<typeof samplingParams>[0], n = 2000) {
  const sample = makeSampler(samplingParams({ seed: 1, ...params }))
  const c = new Array(logits.length).fill(0)
  for (let i = 0; i < n; i++) c[sample(logits, [])]++
  return c
}

describe('sampler', () => {
  test('greedy picks the largest logit', () => {
    expect(makeSampler(samplingParams())(logits, [])).toBe(1)
  })
  test('the same seed gives the same sequence; another seed another one', () => {
    const run = (seed: number) => {
      const s = makeSampler(samplingParams({ temperature: 1, seed }))
      return Array.from({ length: 30 }, () => s(logits, []))
    }
    expect(run(5)).toEqual(run(5))
    expect(run(5)).not.toEqual(run(6))
  })
  test('top-k keeps only the k most likely', () => {
    const c = counts({ temperature: 1, topK: 2 })
    expect(c[1] + c[2]).toBe(2000)
    expect(c[1]).toBeGreaterThan(800)
    expect(c[2]).toBeGreaterThan(800)
  })
  test('top-p keeps the smallest prefix reaching the mass', () => {
    // probabilities at T=1: ~[0.02, 0.38, 0.35, 0.01, 0.00, 0.23]; top-p 0.5 keeps tokens 1 and 2
    const c = counts({ temperature: 1, topP: 0.5 })
    expect(c[1] + c[2]).toBe(2000)
  })
  test('min-p drops tokens below the fraction of the top probability', () => {
    const c = counts({ temperature: 1, minP: 0.7 }) // 5 has 0.6 of the top: dropped
    expect(c[5]).toBe(0)
    expect(c[1] + c[2]).toBe(2000)
  })
  test('temperature sharpens and flattens', () => {
    // T=0.05: p(1)/p(2) = e^(0.1/0.05) ≈ 7.4, so token 1 takes ~88%
    expect(counts({ temperature: 0.05 })[1]).toBeGreaterThan(1650)
    expect(counts({ temperature: 5 })[4]).toBeGreaterThan(100)
  })
  test('repetition penalty discourages recent tokens', () => {
    const sample = makeSampler(samplingParams({ repetitionPenalty: 2 }))
    expect(sample(logits, [1])).toBe(2)
    expect(sample(logits, [1, 2])).toBe(5)
  })
  test('a full-size vocabulary: high token ids survive the sort, negatives and ties order deterministically', () => {
    const V = 151936
    // ~1000 candidates near -3 (every 150th id), the rest 59 below the best: past the 40·T cutoff
    const big = Float32Array.from({ length: V }, (_, i) => (i % 150 ? -50 : -3 + (i % 7) * 0.01))
    big[150001] = 9
    big[149999] = 9 // a tie with the best
    big[151935] = 8.5
    const c = new Map<number, number>()
    const sample = makeSampler(samplingParams({ temperature: 1, topK: 3, seed: 2 }))
    for (let i = 0; i < 800; i++) {
      const id = sample(big, [])
      c.set(id, (c.get(id) ?? 0) + 1)
    }
    expect([...c.keys()].sort()).toEqual([149999, 150001, 151935])
    // p = e^0.5 : e^0.5 : 1 over the three, ≈ 0.384 / 0.384 / 0.233 (±0.015 at 800 draws)
    expect(c.get(151935)! / 800).toBeGreaterThan(0.18)
    expect(c.get(151935)! / 800).toBeLessThan(0.29)
    expect(Math.abs(c.get(149999)! - c.get(150001)!) / 800).toBeLessThan(0.1)
    // without filters every token may come out; a token 40·T below the best never does
    const all = Float32Array.from({ length: 1000 }, () => 0)
    all[5] = -100
    const plain = makeSampler(samplingParams({ temperature: 1, seed: 3 }))
    const seen = new Set(Array.from({ length: 20000 }, () => plain(all, [])))
    expect(seen.size).toBeGreaterThan(990)
    expect(seen.has(5)).toBe(false)
  })

  test('bad parameters are refused', () => {
    expect(() => samplingParams({ topP: 0 })).toThrow(/top_p/)
    expect(() => samplingParams({ temperature: -1 })).toThrow(/temperature/)
  })
})

describe('stop strings', () => {
  test('text is released as soon as it cannot start a stop string, and cut at a match', () => {
    const m = new StopMatcher(['</end>', 'STOP'])
    expect(m.push('Hello <')).toBe('Hello ')
    expect(m.push('/en')).toBe('')
    expect(m.push('x more')).toBe('</enx more')
    expect(m.push(' and ST')).toBe(' and ')
    expect(m.push('OP after')).toBe('')
    expect(m.stopped).toBe(true)
    expect(m.push('ignored')).toBe('')
  })
  test('without stops everything passes through', () => {
    const m = new StopMatcher([])
    expect(m.push('abc')).toBe('abc')
    expect(m.flush()).toBe('')
  })
})
