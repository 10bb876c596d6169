/** The verdict on synthetic figures: each transport's threshold at 64 MiB, the checks it names, and no verdict without
 * 64 MiB. */
import { expect, test } from 'bun:test'
import { JUDGED_BYTES, THRESHOLDS, judgeLink, type VerdictStatus } from '../../src/rdma-ping/link-verdict.ts'
import { summarizeRounds } from '../../src/rdma-ping/round-stats.ts'
import type { PingTransport } from '../../src/tensor-parallel/choose-transport.ts'

const MiB = 1024 * 1024
/** A size whose average bandwidth is exactly `gbps` (every round the same time). */
const at = (bytes: number, gbps: number) => summarizeRounds(bytes, [bytes / (gbps * 1e3)])

const cases: {
  name: string
  transport: PingTransport
  worldSize?: number
  sizes: ReturnType<typeof at>[]
  status: VerdictStatus
  avg: number | null
  line: string[]
  checks: string[]
}[] = [
  {
    name: 'jaccl at the seed figure (7.94 GB/s)',
    transport: 'jaccl',
    sizes: [at(4096, 0.1), at(64 * MiB, 7.94)],
    status: 'healthy',
    avg: 7.94,
    line: ['verdict (jaccl): healthy — 7.94 GB/s average at 64 MiB', 'above 5 GB/s'],
    checks: [],
  },
  {
    name: 'jaccl just above 5 GB/s',
    transport: 'jaccl',
    sizes: [at(64 * MiB, 5.01)],
    status: 'healthy',
    avg: 5.01,
    line: ['healthy'],
    checks: [],
  },
  {
    name: 'jaccl at exactly 5 GB/s is not above it',
    transport: 'jaccl',
    sizes: [at(64 * MiB, 5)],
    status: 'low',
    avg: 5,
    line: ['verdict (jaccl): LOW — 5.00 GB/s average at 64 MiB'],
    checks: ['rdma_ctl status', 'ibv_devinfo', 'PORT_ACTIVE', 'cable', 'dbcluster doctor'],
  },
  {
    name: 'jaccl at TCP speed',
    transport: 'jaccl',
    sizes: [at(4 * MiB, 9), at(64 * MiB, 0.9)],
    status: 'low',
    avg: 0.9,
    line: ['LOW — 0.90 GB/s', 'a healthy Thunderbolt 5 RDMA link shows above 5 GB/s'],
    checks: ['rdma_ctl enable', 'rdma_en'],
  },
  {
    name: 'ring above the 0.5 GB/s floor',
    transport: 'ring',
    sizes: [at(64 * MiB, 1.2)],
    status: 'healthy',
    avg: 1.2,
    line: ['verdict (ring): healthy — 1.20 GB/s', 'Thunderbolt Bridge'],
    checks: [],
  },
  {
    name: 'ring below it',
    transport: 'ring',
    sizes: [at(64 * MiB, 0.12)],
    status: 'low',
    avg: 0.12,
    line: ['verdict (ring): LOW — 0.12 GB/s', 'above 0.5 GB/s'],
    checks: [
      'Thunderbolt Bridge address',
      'cable and port',
      'Thunderbolt Bridge loop',
      'dbcluster doctor',
      'rdma_ctl status',
    ],
  },
  {
    name: 'link below it, 3 ranks: the threshold is a 2-rank figure',
    transport: 'link',
    worldSize: 3,
    sizes: [at(64 * MiB, 0.03)],
    status: 'low',
    avg: 0.03,
    line: ['verdict (link): LOW — 0.03 GB/s', 'the threshold is a 2-rank figure; this run had 3'],
    checks: ['bridge0', 'dbcluster doctor --nodes N'],
  },
  {
    name: 'no 64 MiB: cannot judge, says which size to add',
    transport: 'jaccl',
    sizes: [at(4096, 0.2), at(256 * 1024, 2), at(4 * MiB, 7), at(128 * MiB, 9)],
    status: 'cannot-judge',
    avg: null,
    line: ['verdict (jaccl): cannot judge — 64 MiB was not measured', 'add 64M to --sizes'],
    checks: ['--sizes 4K,256K,4M,64M', '--preset verbose'],
  },
  {
    name: 'quick preset sizes over link: cannot judge',
    transport: 'link',
    sizes: [at(4096, 0.01), at(256 * 1024, 0.3)],
    status: 'cannot-judge',
    avg: null,
    line: ['verdict (link): cannot judge', 'add 64M to --sizes'],
    checks: ['64M'],
  },
]

for (const c of cases)
  test(`verdict: ${c.name}`, () => {
    const v = judgeLink(c.transport, c.worldSize ?? 2, c.sizes)
    expect(v).toMatchObject({
      transport: c.transport,
      status: c.status,
      judged_bytes: JUDGED_BYTES,
      threshold_gbps: THRESHOLDS[c.transport].gbps,
    })
    if (c.avg === null) expect(v.avg_gbps).toBeNull()
    else expect(v.avg_gbps).toBeCloseTo(c.avg, 9)
    for (const part of c.line) expect(v.line).toContain(part)
    if (c.checks.length === 0) expect(v.checks).toEqual([])
    for (const part of c.checks) expect(v.checks.join('\n')).toContain(part)
    if (c.worldSize === undefined) expect(v.line).not.toContain('2-rank figure')
  })

test('the thresholds are the seed figure for jaccl and the 0.5 GB/s floor for TCP', () => {
  expect(JUDGED_BYTES).toBe(67_108_864)
  expect({ jaccl: THRESHOLDS.jaccl.gbps, ring: THRESHOLDS.ring.gbps, link: THRESHOLDS.link.gbps }).toEqual({
    jaccl: 5,
    ring: 0.5,
    link: 0.5,
  })
})
