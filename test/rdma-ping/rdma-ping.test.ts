/** rdma-ping over the sealed link with two real processes on loopback, its failure paths, and its exact-data helpers. */
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

/** consola's info lines and the JSON report share stdout: returns the port and a reader for the rest. */
async function listeningPort(
  proc: ReturnType<typeof spawn>,
  host = '127\\.0\\.0\\.1',
): Promise<{ port: number; rest: () => Promise<string> }> {
  const reader = proc.stdout.getReader()
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

/** Both ranks on loopback over `transport`; returns each rank's JSON report after checking the shape of its tables. */
async function twoRanks(transport: string) {
  const r0 = spawn([
    '--rank',
    '0',
    '--listen',
    '127.0.0.1:0',
    '--transport',
    transport,
    '--rounds',
    '4',
    '--sizes',
    '4K,256K',
    '--json',
  ])
  const { port, rest } = await listeningPort(r0)
  const r1 = spawn([
    '--rank',
    '1',
    '--peer',
    `127.0.0.1:${port}`,
    '--transport',
    transport,
    '--rounds',
    '4',
    '--sizes',
    '4K,256K',
    '--json',
  ])
  const [out0, out1] = (await Promise.all([rest(), new Response(r1.stdout).text()])).map((t) =>
    t.trim().split('\n').at(-1)!,
  )
  const [err0, err1] = await Promise.all([new Response(r0.stderr).text(), new Response(r1.stderr).text()])
  expect({ rc: await r0.exited, err: err0 }).toMatchObject({ rc: 0 })
  expect({ rc: await r1.exited, err: err1 }).toMatchObject({ rc: 0 })
  for (const [rank, out] of [
    [0, out0],
    [1, out1],
  ] as const) {
    const report = JSON.parse(out!)
    expect(report).toMatchObject({ rank, world_size: 2, transport })
    expect(report.sizes.map((s: { bytes: number }) => s.bytes)).toEqual([4096, 262144])
    for (const s of report.sizes) {
      expect(s.rounds).toBe(4)
      expect(s.latency_us.min).toBeGreaterThan(0)
      expect(s.latency_us.min).toBeLessThanOrEqual(s.latency_us.median)
      expect(s.latency_us.median).toBeLessThanOrEqual(s.latency_us.p99)
      expect(s.gbps).toBeGreaterThan(0)
    }
  }
}

test('two ranks over link: exact sums, latency and bandwidth per size, on both ranks', () => twoRanks('link'), 60_000)

const ring = probeMlxTransport('ring')
test.skipIf(!ring.available)(
  `two ranks over MLX ring, meeting by --peer alone: exact sums, latency and bandwidth per size${ring.available ? '' : ` (skipped: ${ring.reason})`}`,
  () => twoRanks('ring'),
  120_000,
)

test('--coordinator HOST:PORT on every rank: rank 0 listens on its port, the other dials it', async () => {
  const l = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = l.port
  l.stop(true)
  const args = ['--coordinator', `127.0.0.1:${port}`, '--transport', 'link', '--rounds', '2', '--sizes', '4K', '--json']
  const r0 = spawn(['--rank', '0', ...args])
  const { port: listening, rest } = await listeningPort(r0, '0\\.0\\.0\\.0')
  expect(listening).toBe(port)
  const r1 = spawn(['--rank', '1', ...args])
  const outs = await Promise.all([rest(), new Response(r1.stdout).text()])
  expect([await r0.exited, await r1.exited]).toEqual([0, 0])
  expect(outs.map((t) => JSON.parse(t.trim().split('\n').at(-1)!).sizes[0].bytes)).toEqual([4096, 4096])
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

test('sizes parse with K/M/G suffixes; bad ones are refused', () => {
  expect(parseSizes('4K,256K,4M,64M')).toEqual([4096, 262144, 4 << 20, 64 << 20])
  expect(parseSizes('100')).toEqual([100])
  expect(() => parseSizes('4X')).toThrow("bad size '4X'")
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
