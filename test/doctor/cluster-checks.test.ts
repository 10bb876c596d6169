/** Doctor checks across nodes, fed a head's /health (served by a real HTTP server), and the Thunderbolt Bridge loop check
 * fed sample `ifconfig bridge0` outputs. */
import { afterAll, expect, test } from 'bun:test'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defaultEnv } from '../../src/doctor/checks.ts'
import { checkBridgeLoop, checkCluster, checkRdmaPeers } from '../../src/doctor/cluster-checks.ts'
import { parseBridgeMembers } from '../../src/doctor/macos-parsers.ts'

const dir = mkdtempSync(join(tmpdir(), 'doctor-cluster-'))
const GiB = 2 ** 30
let health: unknown = {}
const server = Bun.serve({ port: 0, fetch: () => Response.json(health) })
afterAll(() => server.stop(true))
const env = (extra = {}) =>
  defaultEnv({ keyFile: join(dir, 'k'), pinFile: join(dir, 'p'), cluster: `http://127.0.0.1:${server.port}`, ...extra })

const member = (rank: number, extra = {}) => ({
  rank,
  serial: `node-${rank}`,
  os_version: 'macOS 26.2',
  clock_skew_ms: rank * 120,
  free_bytes: 40 * GiB,
  weight_bytes: 10 * GiB,
  kv_bytes: 2 * GiB,
  usable_bytes: 48 * GiB,
  ...extra,
})

test('a healthy cluster passes all three; each problem fails with the node named and a fix', async () => {
  health = { nodes: 2, members: [member(0), member(1)] }
  expect((await checkCluster(env())).map((r) => r.status)).toEqual(['PASS', 'PASS', 'PASS'])

  health = {
    nodes: 3,
    members: [member(0), member(1, { os_version: 'macOS 26.1' }), member(2, { clock_skew_ms: -7300 })],
  }
  const [os, clock, memory] = await checkCluster(env())
  expect(os).toMatchObject({
    status: 'FAIL',
    detail: 'macOS 26.2: rank 0 node-0, rank 2 node-2; macOS 26.1: rank 1 node-1',
  })
  expect(os!.fix).toContain('same macOS release')
  expect(clock).toMatchObject({ status: 'FAIL', detail: 'rank 2 node-2 -7.3 s' })
  expect(memory!.status).toBe('PASS')

  health = { nodes: 2, members: [member(0), member(1, { free_bytes: 8 * GiB })] }
  const short = (await checkCluster(env()))[2]!
  expect(short).toMatchObject({
    status: 'FAIL',
    detail: 'rank 1 node-1 had 8.0 GiB free for 12.0 GiB of weights and KV',
  })
  // live free memory already has the layers loaded: the plan is judged against what the node had when it joined
  health = {
    nodes: 2,
    members: [member(0), member(1, { free_bytes: 2 * GiB, free_bytes_at_join: 40 * GiB })],
  }
  expect((await checkCluster(env()))[2]!.status).toBe('PASS')
})

test('without --cluster the checks skip; an unreachable head fails; a head serving alone skips', async () => {
  expect((await checkCluster(env({ cluster: undefined }))).every((r) => r.status === 'SKIP')).toBe(true)
  const gone = await checkCluster(env({ cluster: 'http://127.0.0.1:1' }))
  expect(gone.every((r) => r.status === 'FAIL' && r.detail.startsWith('cannot read'))).toBe(true)
  health = { nodes: 1 }
  expect((await checkCluster(env())).every((r) => r.status === 'SKIP' && r.detail.includes('serves alone'))).toBe(true)
})

const BRIDGE = `bridge0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500
\toptions=63<RXCSUM,TXCSUM,TSO4,TSO6>
\tether 36:e3:0a:4b:12:00
\tConfiguration:
\t\tid 0:0:0:0:0:0 priority 0 hellotime 0 fwddelay 0
\tmember: en2 flags=3<LEARNING,DISCOVER>
\t        ifmaxaddr 0 port 9 priority 0 path cost 0
\tmember: en3 flags=3<LEARNING,DISCOVER>
\t        ifmaxaddr 0 port 10 priority 0 path cost 0
\tstatus: active
`

test('Thunderbolt Bridge loop: two member ports in a ring of 3 fail; one passes; fewer nodes or Linux skip', async () => {
  expect(parseBridgeMembers(BRIDGE)).toEqual(['en2', 'en3'])
  const mac = (stdout: string, ok = true) =>
    env({
      platform: 'darwin',
      run: async () => (ok ? { ok: true, stdout } : { ok: false, stdout: '', reason: 'exit 1' }),
    })
  const loop = await checkBridgeLoop(mac(BRIDGE), 3)
  expect(loop.status).toBe('FAIL')
  expect(loop.detail).toContain('en2, en3')
  expect(loop.fix).toContain('Thunderbolt Bridge')
  expect((await checkBridgeLoop(mac(BRIDGE.replace(/\tmember: en3[^\n]*\n[^\n]*\n/, '')), 3)).status).toBe('PASS')
  expect((await checkBridgeLoop(mac(BRIDGE), 2)).status).toBe('SKIP')
  expect((await checkBridgeLoop(mac('', false), 3)).detail).toContain('no bridge0')
  expect((await checkBridgeLoop(env({ platform: 'linux' }), 3)).status).toBe('SKIP')
})

const IBV = `hca_id:\trdma_en5
\ttransport:\t\t\tInfiniBand (0)
\tphys_port_cnt:\t\t\t1
\t\tport:\t1
\t\t\tstate:\t\t\tPORT_ACTIVE (4)

hca_id:\trdma_en6
\t\tport:\t1
\t\t\tstate:\t\t\tPORT_ACTIVE (4)

hca_id:\trdma_en7
\t\tport:\t1
\t\t\tstate:\t\t\tPORT_DOWN (1)
`

test('RDMA device → peer: each active rdma_enN names the link-local neighbour on enN; a device facing nobody fails', async () => {
  const arp: Record<string, string> = {
    en5: '? (169.254.10.2) at 36:e3:0a:4b:12:05 on en5 [ethernet]\n',
    en6: '? (169.254.20.3) at 36:e3:0a:4b:12:06 on en6 [ethernet]\n? (10.0.0.1) at 11:22:33:44:55:66 on en6 [ethernet]\n',
  }
  const mac = (table: Record<string, string>) =>
    env({
      platform: 'darwin',
      run: async (cmd: string[]) =>
        cmd[0] === 'ibv_devinfo' ? { ok: true, stdout: IBV } : { ok: true, stdout: table[cmd.at(-1)!] ?? '' },
    })
  const ok = await checkRdmaPeers(mac(arp))
  expect(ok.status).toBe('PASS')
  expect(ok.detail).toContain('rdma_en5 → en5 → 169.254.10.2; rdma_en6 → en6 → 169.254.20.3')
  expect(ok.detail).not.toContain('rdma_en7') // its port is down
  const lonely = await checkRdmaPeers(mac({ en5: arp.en5! }))
  expect(lonely.status).toBe('FAIL')
  expect(lonely.detail).toContain('rdma_en6 → en6 → no peer seen')
  expect(lonely.fix).toContain('rdma_en6 (en6)')
  expect((await checkRdmaPeers(env({ platform: 'linux' }))).status).toBe('SKIP')
})
