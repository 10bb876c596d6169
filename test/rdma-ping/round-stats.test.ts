/** Per-size figures from known round times, and the table they print as. */
import { expect, test } from 'bun:test'
import { formatBytes, formatLatency, reportLines } from '../../src/rdma-ping/ping-report.ts'
import { judgeLink } from '../../src/rdma-ping/link-verdict.ts'
import { summarizeRounds } from '../../src/rdma-ping/round-stats.ts'

test('latency min/avg/median/p99/max and bandwidth avg/peak/median from the round times', () => {
  // 1 MB in 100, 200, 300, 400 and 1000 µs: mean 400 µs
  const s = summarizeRounds(1e6, [300, 100, 1000, 200, 400])
  expect(s.bytes).toBe(1e6)
  expect(s.rounds).toBe(5)
  expect(s.latency_us).toEqual({ min: 100, avg: 400, median: 300, p99: 1000, max: 1000 })
  // algorithm bandwidth: bytes / time; 1e6 B / 400 µs = 2.5 GB/s, / 100 µs = 10, / 300 µs = 3.33
  expect(s.bandwidth_gbps.avg).toBeCloseTo(2.5, 12)
  expect(s.bandwidth_gbps.peak).toBeCloseTo(10, 12)
  expect(s.bandwidth_gbps.median).toBeCloseTo(1e6 / 300e3, 12)
  expect(s.round_us).toEqual([300, 100, 1000, 200, 400])
})

test('p99 is the nearest rank: with 100 rounds the 99th slowest, not the max', () => {
  const times = Array.from({ length: 100 }, (_, i) => i + 1)
  expect(summarizeRounds(4096, times.reverse()).latency_us).toMatchObject({ p99: 99, max: 100, median: 50, min: 1 })
})

test('sizes and latencies print in units that fit', () => {
  expect([4096, 262144, 64 << 20, 1 << 30, 100].map(formatBytes)).toEqual([
    '4 KiB',
    '256 KiB',
    '64 MiB',
    '1 GiB',
    '100 B',
  ])
  expect([25.5, 9999.94, 7600, 7_600_000].map(formatLatency)).toEqual([
    '25.5 µs',
    '9999.9 µs',
    '7600.0 µs',
    '7600.00 ms',
  ])
  expect(formatLatency(12_345)).toBe('12.35 ms')
})

test('the table has one row per size and ends with the verdict and its checks', () => {
  const sizes = [summarizeRounds(4096, [25.5, 30]), summarizeRounds(64 << 20, [8000, 9000])]
  const lines = reportLines({
    rank: 0,
    world_size: 2,
    transport: 'jaccl',
    preset: 'verbose',
    rounds: 2,
    warmup_rounds: 1,
    sizes,
    verdict: judgeLink('jaccl', 2, sizes),
  })
  expect(lines[0]).toBe('rank 0/2 over jaccl (preset verbose): 2 rounds per size after 1 warm-up, every sum exact')
  expect(lines[2]!.split(/\s+/).filter(Boolean)).toEqual([
    'size',
    'avg',
    'min',
    'median',
    'p99',
    'max',
    'GB/s',
    'avg',
    'GB/s',
    'peak',
  ])
  expect(lines[3]!.trim().split(/\s{2,}/)).toEqual([
    '4 KiB',
    '27.8 µs',
    '25.5 µs',
    '25.5 µs',
    '30.0 µs',
    '30.0 µs',
    '0.148',
    '0.161',
  ])
  expect(lines[4]!.trim().split(/\s{2,}/)).toEqual([
    '64 MiB',
    '8500.0 µs',
    '8000.0 µs',
    '8000.0 µs',
    '9000.0 µs',
    '9000.0 µs',
    '7.895',
    '8.389',
  ])
  expect(lines[5]).toStartWith('verdict (jaccl): healthy — 7.90 GB/s average at 64 MiB')
  expect(lines).toHaveLength(6)
})
