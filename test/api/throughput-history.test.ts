/** The dashboard's throughput history on its own, with a clock passed in: samples closer than an interval are dropped,
 * each point is the counter's change over its interval, and the ring keeps the newest points only. */
import { expect, test } from 'bun:test'
import { ThroughputHistory } from '../../src/api/throughput-history.ts'

test('an empty or one-sample history has no points', () => {
  const h = new ThroughputHistory(1000, 4)
  expect(h.series()).toEqual([])
  h.observe(0, 10)
  expect(h.series()).toEqual([])
})

test('each point is the change over its interval; samples less than an interval apart are dropped', () => {
  const h = new ThroughputHistory(1000, 4)
  h.observe(0, 0)
  h.observe(500, 7) // too soon: dropped
  h.observe(1000, 20)
  h.observe(3000, 30) // a late sample: the rate is over the two seconds it covers
  expect(h.series()).toEqual([
    { at: 1000, tokens: 20, tokens_per_s: 20 },
    { at: 3000, tokens: 10, tokens_per_s: 5 },
  ])
})

test('the ring keeps the newest points, oldest first, across many turns', () => {
  const h = new ThroughputHistory(1000, 3)
  for (let s = 0; s <= 20; s++) h.observe(s * 1000, s * s) // tokens in second s: 2s - 1
  expect(h.series()).toEqual([18, 19, 20].map((s) => ({ at: s * 1000, tokens: 2 * s - 1, tokens_per_s: 2 * s - 1 })))
})
