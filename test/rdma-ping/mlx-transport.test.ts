/** rdma-ping's MLX side without MLX: which transport runs and why, and the hostfile / device matrix / environment the
 * ranks' reports turn into (design/mlx-c.md §5). */
import { expect, test } from 'bun:test'
import { existsSync, readFileSync } from 'node:fs'
import { chooseTransport, type TransportProbes } from '../../src/tensor-parallel/choose-transport.ts'
import { buildLayout, parseDevices, writeMlxEnvironment } from '../../src/tensor-parallel/mlx-layout.ts'

const yes = { available: true as const }
const no = (reason: string) => ({ available: false as const, reason })
const probes = (o: Partial<TransportProbes> & { ring?: boolean; jaccl?: boolean }): TransportProbes => ({
  platform: o.platform ?? 'darwin',
  rdmaGate: o.rdmaGate ?? (() => ({ enabled: true, detail: 'Apple M5 Max, rdma_ctl: enabled' })),
  mlx: (t) =>
    (t === 'ring' ? (o.ring ?? true) : (o.jaccl ?? true))
      ? yes
      : no(`this libmlx was built without the '${t}' backend`),
})

function thrown(fn: () => unknown): unknown {
  try {
    fn()
  } catch (error) {
    return error
  }
  throw new Error('expected a throw')
}

test('auto: jaccl where the gate passes, else ring with MLX, else link, each with its reason', () => {
  expect(chooseTransport('auto', probes({}))).toEqual({
    transport: 'jaccl',
    reason: 'jaccl (auto: RDMA gate passed and MLX has jaccl)',
  })
  expect(
    chooseTransport(
      'auto',
      probes({ rdmaGate: () => ({ enabled: false, reason: 'RDMA is disabled: run rdma_ctl enable' }) }),
    ),
  ).toEqual({
    transport: 'ring',
    reason: 'ring (auto: jaccl needs RDMA: RDMA is disabled: run rdma_ctl enable)',
  })
  expect(chooseTransport('auto', probes({ platform: 'linux' })).transport).toBe('ring')
  const link = chooseTransport('auto', probes({ platform: 'linux', ring: false }))
  expect(link.transport).toBe('link')
  expect(link.reason).toContain("ring needs MLX: this libmlx was built without the 'ring' backend")
})

test('an asked-for transport that cannot work says why and which one would', () => {
  expect(() => chooseTransport('jaccl', probes({ platform: 'linux' }))).toThrow(
    'jaccl needs macOS 26.2+ with RDMA over Thunderbolt 5; this machine is linux',
  )
  expect(thrown(() => chooseTransport('jaccl', probes({ platform: 'linux', ring: false })))).toMatchObject({
    hint: 'use --transport link (works everywhere, no MLX needed)',
  })
  expect(thrown(() => chooseTransport('jaccl', probes({ jaccl: false })))).toMatchObject({
    message: "this libmlx was built without the 'jaccl' backend",
    hint: 'use --transport ring (MLX over TCP) or --transport link',
  })
  expect(() => chooseTransport('ring', probes({ ring: false }))).toThrow(
    "ring needs MLX: this libmlx was built without the 'ring' backend",
  )
  expect(chooseTransport('link', probes({ ring: false })).transport).toBe('link')
})

test('ring: a hostfile indexed by rank, one ip:port each', () => {
  const layout = buildLayout('ring', [
    { rank: 1, ip: '10.0.0.2', port: 5001 },
    { rank: 0, ip: '10.0.0.1', port: 5000 },
  ])
  expect(layout).toEqual({ transport: 'ring', worldSize: 2, hostfile: [['10.0.0.1:5000'], ['10.0.0.2:5001']] })
  const { env, cleanup } = writeMlxEnvironment(layout, 1)
  expect(env.MLX_RANK).toBe('1')
  expect(JSON.parse(readFileSync(env.MLX_HOSTFILE!, 'utf8'))).toEqual([['10.0.0.1:5000'], ['10.0.0.2:5001']])
  cleanup()
  expect(existsSync(env.MLX_HOSTFILE!)).toBe(false)
})

test('jaccl: rank 0 is the coordinator and the device matrix has null on its diagonal', () => {
  const layout = buildLayout('jaccl', [
    { rank: 0, ip: '169.254.1.1', port: 6000, devices: parseDevices('rdma_en5', 0, 2) },
    { rank: 1, ip: '169.254.1.2', port: 6001, devices: parseDevices('rdma_en3', 1, 2) },
  ])
  expect(layout).toEqual({
    transport: 'jaccl',
    worldSize: 2,
    coordinator: '169.254.1.1:6000',
    devices: [
      [null, 'rdma_en5'],
      ['rdma_en3', null],
    ],
  })
  const { env, cleanup } = writeMlxEnvironment(layout, 0)
  expect(env).toMatchObject({ MLX_RANK: '0', MLX_JACCL_COORDINATOR: '169.254.1.1:6000' })
  expect(JSON.parse(readFileSync(env.MLX_IBV_DEVICES!, 'utf8'))).toEqual([
    [null, 'rdma_en5'],
    ['rdma_en3', null],
  ])
  cleanup()
  expect(parseDevices('-,rdma_en5,rdma_en6', 0, 3)).toEqual([null, 'rdma_en5', 'rdma_en6'])
  expect(() => parseDevices('a,b', 0, 3)).toThrow('--rdma-device lists 2 names for 3 ranks')
})

test('bad reports are refused: a missing or doubled rank, an IPv6 address, a missing device', () => {
  expect(() =>
    buildLayout('ring', [
      { rank: 0, ip: '10.0.0.1', port: 1 },
      { rank: 0, ip: '10.0.0.2', port: 2 },
    ]),
  ).toThrow('ranks 0, 0 joined; expected 0..1 once each')
  expect(() =>
    buildLayout('ring', [
      { rank: 0, ip: '10.0.0.1', port: 1 },
      { rank: 1, ip: 'fe80::1', port: 2 },
    ]),
  ).toThrow("rank 1 offers 'fe80::1', but MLX distributed needs an IPv4 address")
  expect(() =>
    buildLayout('jaccl', [
      { rank: 0, ip: '10.0.0.1', port: 1, devices: [null, 'rdma_en5'] },
      { rank: 1, ip: '10.0.0.2', port: 2 },
    ]),
  ).toThrow('rank 1 named no RDMA device towards rank 0')
})
