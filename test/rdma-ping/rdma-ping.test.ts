/** rdma-ping over the sealed link (and MLX ring where it is built) with two real processes on loopback: the JSON report,
 * the table, presets on the command line, its failure paths, and its exact-data helpers. */
import { expect, test } from 'bun:test'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expectedSum, firstMismatch, rankData } from '../../src/rdma-ping/exact-data.ts'
import { parseSizes } from '../../src/rdma-ping/ping-rounds.ts'
import { probeMlxTransport } from '../../src/tensor-parallel/mlx-group.ts'

const BUN = process.execPath
const MAIN = new URL('../../src/main.ts', import.meta.url).pathname
const home = () => mkdtempSync(join(tmpdir(), 'rdma-ping-'))
const spawn = (args: string[]) =>
  Bun.spawn([BUN, MAIN, 'rdma-ping', ...args], {
    env: {
      ...process.env,
      NODE_ENV: 'production',
      DBCLUSTER_HOME: home(),
    } /* consola hides info lines under NODE_ENV=test */,
    stdout: 'pipe',
    stderr: 'pipe',
  })

/** Logs go to stderr: reads it until rank 0 says where it listens; returns the port and a reader for the rest. */
async function listeningPort(
  proc: ReturnType<typeof spawn>,
  host = '127\\.0\\.0\\.1',
): Promise<{ port: number; rest: () => Promise<string> }> {
  const reader = proc.stderr.getReader()
  let text = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`rank 0 exited: ${text}`)
    text += new TextDecoder().decode(value)
    const m = new RegExp(`listening on ${host}:(\\d+)`).exec(text)
    if (m) {
      const rest = async () => {
        for (;;) {
          const { value, done } = await reader.read()
          if (done) return text
          text += new TextDecoder().decode(value)
        }
      }
      return { port: Number(m[1]), rest }
    }
  }
}

const MiB = 1024 * 1024

/** Both ranks on loopback over `transport` with `--json` and `args`; checks that stdout is one JSON document on each
 * rank, that every figure in it agrees with its own round times, and returns the two reports. */
async function twoRanks(transport: string, args: string[]) {
  const common = ['--transport', transport, ...args, '--json']
  const r0 = spawn(['--rank', '0', '--listen', '127.0.0.1:0', ...common])
  const { port, rest } = await listeningPort(r0)
  const r1 = spawn(['--rank', '1', '--peer', `127.0.0.1:${port}`, ...common])
  const [out0, out1, err0, err1] = await Promise.all([
    new Response(r0.stdout).text(),
    new Response(r1.stdout).text(),
    rest(),
    new Response(r1.stderr).text(),
  ])
  expect({ rc: await r0.exited, err: err0 }).toMatchObject({ rc: 0 })
  expect({ rc: await r1.exited, err: err1 }).toMatchObject({ rc: 0 })
  expect(err0).toContain(`transport: ${transport}`)
  const reports = [out0, out1].map((out, rank) => {
    // nothing but the document on stdout: one line, and it parses whole
    expect(out.endsWith('\n') && out.indexOf('\n') === out.length - 1).toBe(true)
    const report = JSON.parse(out)
    expect(report).toMatchObject({ rank, world_size: 2, transport, warmup_rounds: 1 })
    expect(Object.keys(report).sort()).toEqual(
      ['preset', 'rank', 'rounds', 'sizes', 'transport', 'verdict', 'warmup_rounds', 'world_size'].sort(),
    )
    for (const s of report.sizes) {
      expect(s.rounds).toBe(report.rounds)
      expect(s.round_us).toHaveLength(report.rounds)
      const sorted = [...s.round_us].sort((a: number, b: number) => a - b)
      const mean = s.round_us.reduce((a: number, b: number) => a + b, 0) / s.rounds
      expect(sorted[0]).toBeGreaterThan(0)
      expect(s.latency_us.min).toBe(sorted[0])
      expect(s.latency_us.max).toBe(sorted.at(-1))
      expect(s.latency_us.avg).toBeCloseTo(mean, 6)
      expect(s.latency_us.min).toBeLessThanOrEqual(s.latency_us.median)
      expect(s.latency_us.median).toBeLessThanOrEqual(s.latency_us.p99)
      expect(s.latency_us.p99).toBeLessThanOrEqual(s.latency_us.max)
      // algorithm bandwidth: vector bytes / round time (bytes per ns = GB/s)
      expect(s.bandwidth_gbps.avg).toBeCloseTo(s.bytes / (mean * 1e3), 9)
      expect(s.bandwidth_gbps.peak).toBeCloseTo(s.bytes / (sorted[0] * 1e3), 9)
      expect(s.bandwidth_gbps.median).toBeCloseTo(s.bytes / (s.latency_us.median * 1e3), 9)
      expect(s.bandwidth_gbps.peak).toBeGreaterThanOrEqual(s.bandwidth_gbps.avg)
    }
    const at64 = report.sizes.find((s: { bytes: number }) => s.bytes === 64 * MiB)
    expect(report.verdict).toMatchObject({
      transport,
      judged_bytes: 64 * MiB,
      threshold_gbps: transport === 'jaccl' ? 5 : 0.5,
    })
    if (at64) {
      expect(report.verdict.avg_gbps).toBe(at64.bandwidth_gbps.avg)
      expect(report.verdict.status).toBe(at64.bandwidth_gbps.avg > 0.5 ? 'healthy' : 'low')
    } else {
      expect(report.verdict).toMatchObject({ status: 'cannot-judge', avg_gbps: null })
      expect(report.verdict.line).toContain('add 64M to --sizes')
    }
    return report
  })
  return { reports, err0, err1 }
}

test('two ranks over link, --preset quick with --rounds and --sizes overriding it: every figure in one JSON document per rank, a judged 64 MiB', async () => {
  const { reports, err1 } = await twoRanks('link', ['--preset', 'quick', '--rounds', '2', '--sizes', '4K,64M'])
  for (const r of reports) {
    expect(r).toMatchObject({ preset: 'quick', rounds: 2 })
    expect(r.sizes.map((s: { bytes: number }) => s.bytes)).toEqual([4096, 64 * MiB])
    expect(['healthy', 'low']).toContain(r.verdict.status)
    expect(r.verdict.line).toContain(`verdict (link): ${r.verdict.status === 'low' ? 'LOW' : 'healthy'}`)
  }
  // progress went to stderr: a size summary per size
  expect(err1).toContain('64 MiB: 2 rounds, avg')
}, 120_000)

test('two ranks over link, --preset verbose --sizes 4K,256K: every round on stderr, no verdict without 64 MiB', async () => {
  const { reports, err0 } = await twoRanks('link', ['--preset', 'verbose', '--rounds', '3', '--sizes', '4K,256K'])
  expect(reports.map((r) => r.preset)).toEqual(['verbose', 'verbose'])
  for (const n of [1, 2, 3]) expect(err0).toContain(`256 KiB round ${n}/3: `)
}, 60_000)

const ring = probeMlxTransport('ring')
test.skipIf(!ring.available)(
  `two ranks over MLX ring, meeting by --peer alone, --preset quick: the same JSON figures${ring.available ? '' : ` (skipped: ${ring.reason})`}`,
  async () => {
    const { reports } = await twoRanks('ring', ['--preset', 'quick'])
    for (const r of reports) {
      expect(r).toMatchObject({ preset: 'quick', rounds: 5 })
      expect(r.sizes.map((s: { bytes: number }) => s.bytes)).toEqual([4096, 262144])
    }
  },
  120_000,
)

test('--coordinator HOST:PORT on every rank: rank 0 listens on its port, the other dials it', async () => {
  const l = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = l.port
  l.stop(true)
  const args = ['--coordinator', `127.0.0.1:${port}`, '--transport', 'link', '--rounds', '2', '--sizes', '4K']
  const r0 = spawn(['--rank', '0', ...args])
  const { port: listening } = await listeningPort(r0, '0\\.0\\.0\\.0')
  expect(listening).toBe(port)
  const r1 = spawn(['--rank', '1', ...args, '--json'])
  const [table, json] = await Promise.all([new Response(r0.stdout).text(), new Response(r1.stdout).text()])
  expect([await r0.exited, await r1.exited]).toEqual([0, 0])
  expect(JSON.parse(json).sizes[0].bytes).toBe(4096)
  // without --json: the table alone on stdout (the logs are on stderr), then the verdict
  const lines = table.trimEnd().split('\n')
  expect(lines[0]).toBe('rank 0/2 over link: 2 rounds per size after 1 warm-up, every sum exact')
  expect(lines[2]!.trim().split(/\s{2,}/)).toEqual([
    'size',
    'avg',
    'min',
    'median',
    'p99',
    'max',
    'GB/s avg',
    'GB/s peak',
  ])
  expect(lines[3]).toMatch(/^ *4 KiB( +[\d.]+ (µs|ms)){5}( +[\d.]+){2}$/)
  expect(lines[4]).toStartWith('verdict (link): cannot judge — 64 MiB was not measured')
  expect(lines[5]).toContain('--sizes 4K,256K,4M,64M')
  expect(table).not.toContain('listening on')
}, 60_000)

test('a peer that never comes fails with a clear line and a non-zero exit', async () => {
  const r1 = spawn(['--rank', '1', '--peer', '127.0.0.1:1', '--timeout-s', '1', '--sizes', '4K'])
  const err = await new Response(r1.stderr).text()
  expect(await r1.exited).toBe(1)
  expect(err).toContain('rank 0 at 127.0.0.1:1 did not answer within 1 s')
  const r0 = spawn(['--rank', '0', '--listen', '127.0.0.1:0', '--timeout-s', '1', '--sizes', '4K'])
  const err0 = await new Response(r0.stderr).text()
  expect(await r0.exited).toBe(1)
  expect(err0).toContain('0 of 1 peers connected')
}, 30_000)

test('unavailable transports say why and which one works', async () => {
  if (process.platform !== 'darwin') {
    const p = spawn(['--rank', '0', '--transport', 'jaccl'])
    const err = await new Response(p.stderr).text()
    expect(await p.exited).toBe(1)
    expect(err).toContain(`jaccl needs macOS 26.2+ with RDMA over Thunderbolt 5; this machine is ${process.platform}`)
    expect(err).toContain(
      ring.available ? 'use --transport ring (MLX over TCP) or --transport link' : 'use --transport link',
    )
  }
  if (!ring.available) {
    const p = spawn(['--rank', '0', '--transport', 'ring'])
    const err = await new Response(p.stderr).text()
    expect(await p.exited).toBe(1)
    expect(err).toContain('ring needs MLX')
    expect(err).toContain('use --transport link')
  }
  const bad = spawn(['--rank', '1'])
  expect(await new Response(bad.stderr).text()).toContain('ranks > 0 need --peer')
  expect(await bad.exited).toBe(2)
}, 30_000)

test('an unknown preset, a bad size and a vector larger than a link frame are refused by name (exit 2)', async () => {
  for (const [args, message] of [
    [['--preset', 'fast'], "unknown --preset 'fast'"],
    [['--sizes', '4K,4X'], "--sizes: bad size '4X'"],
    [['--transport', 'link', '--sizes', '4K,512M'], '--sizes 536870912 is larger than the sealed link carries'],
    [['--rounds', '0'], "--rounds must be a positive integer, got '0'"],
  ] as const) {
    const p = spawn(['--rank', '0', '--listen', '127.0.0.1:0', ...args])
    const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()])
    expect({ rc: await p.exited, err }).toMatchObject({ rc: 2 })
    expect(err).toContain(message)
    expect(out).toBe('')
  }
}, 30_000)

test('sizes parse with K/M/G suffixes; bad ones are refused', () => {
  expect(parseSizes('4K,256K,4M,64M')).toEqual([4096, 262144, 4 << 20, 64 << 20])
  expect(parseSizes('100')).toEqual([100])
  expect(() => parseSizes('4X')).toThrow("--sizes: bad size '4X'")
  expect(() => parseSizes('2')).toThrow('below 4 bytes')
})

test('the test data sums exactly and a corrupted element is found', () => {
  const want = expectedSum(3, 1000)
  const got = new Float32Array(1000)
  for (let r = 0; r < 3; r++) rankData(r, 1000).forEach((v, i) => (got[i]! += v))
  expect(firstMismatch(got, want)).toBe(-1)
  expect(want.every((v) => Number.isInteger(v))).toBe(true)
  got[17]! += 1
  expect(firstMismatch(got, want)).toBe(17)
})

test('a wrong sum from the transport fails the round with the element and values', async () => {
  const { pingRounds } = await import('../../src/rdma-ping/ping-rounds.ts')
  // A transport that returns only this rank's data: the sum over 2 ranks is wrong.
  const broken = async (data: Float32Array) => data.slice()
  await expect(pingRounds(broken, { rank: 0, worldSize: 2, sizes: [64], rounds: 2 })).rejects.toThrow(
    'all_sum of 64 bytes, round 0: element 0',
  )
})
