/** `serve --rdma` is opt-in: without it a node registers with the coordinator as not RDMA-capable and says nothing of
 * RDMA; with it, the node registers what this machine's capability gate decides, and prints the gate's reason when it
 * refuses (as on a machine without an RDMA device). The gate's own cases are decideRdma's test (test/trust/identity.test.ts). */
import { afterAll, expect, test } from 'bun:test'
import { join } from 'node:path'
import { prepareLocalNodes } from '../../src/cluster/local-cluster.ts'
import { rdmaProbes } from '../../src/trust/machine-info.ts'
import { decideRdma } from '../../src/trust/rdma-gate.ts'
import { createToken, startCoordinator, tempDir, type CoordinatorProcess } from './support.ts'
import { spawnServeNode, stopNodes } from '../support/serve-node.ts'

const ROOT = new URL('../..', import.meta.url).pathname
let coord: CoordinatorProcess | undefined
afterAll(async () => {
  await stopNodes()
  await coord?.stop()
})

/** A stage (its head never comes) that registers with the coordinator; its output so far. */
function stage(home: string, peers: string, name: string, token: string, extra: string[]) {
  const args = [
    '--peers',
    peers,
    '--rank',
    '1',
    '--node-name',
    name,
    '--backend',
    'cpu',
    '--coordinator',
    coord!.url,
    '--coordinator-token',
    token,
    ...extra,
  ]
  return spawnServeNode(home, args).output
}

test("without --rdma a node registers as not RDMA-capable; with it, the gate's refusal is printed with its reason", async () => {
  const db = join(tempDir(), 'c.db')
  const token = await createToken(db, 'lab')
  coord = await startCoordinator(db)
  const { homes, peers } = prepareLocalNodes(3, undefined, false)
  const quiet = stage(homes[1]!, peers.split(',').slice(0, 2).join(','), 'quiet-1', token, [])
  const asking = stage(homes[2]!, peers.split(',').slice(0, 2).join(','), 'asking-1', token, ['--rdma'])
  const providers = async () =>
    (
      (await (
        await fetch(`${coord!.url}/v1/account/providers`, { headers: { authorization: `Bearer ${token}` } })
      ).json()) as { providers: { serial: string; rdma_enabled: boolean }[] }
    ).providers
  const deadline = Date.now() + 60_000
  while ((await providers()).length < 2 && Date.now() < deadline) await Bun.sleep(100)
  // what the gate decides on this machine, asked the same way the node asks it
  const gate = decideRdma(true, rdmaProbes())
  expect((await providers()).map((p) => [p.serial, p.rdma_enabled])).toEqual([
    ['asking-1', gate.enabled],
    ['quiet-1', false],
  ])
  if (!gate.enabled) expect(asking()).toContain(`--rdma: not registering this node as RDMA-capable: ${gate.reason}`)
  expect(quiet()).not.toContain('--rdma')
}, 90_000)

test('--rdma without --coordinator is refused, naming what is missing', () => {
  const r = Bun.spawnSync(
    [process.execPath, 'src/main.ts', 'serve', '--rdma', '--peers', '127.0.0.1:1,127.0.0.1:2', '--rank', '1'],
    { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' },
  )
  expect(r.exitCode).toBe(2)
  expect(r.stderr.toString()).toContain('--rdma registers this node with the coordinator: give --coordinator too')
})
