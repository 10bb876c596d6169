/** A 2-node cluster whose nodes start with no pins: both register with a real coordinator process, and each pins the
 * other's key from the coordinator's attested record at the first handshake; the ring forms and answers. */
import { afterAll, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startLocalCluster, type LocalCluster } from '../../src/cluster/local-cluster.ts'
import { createToken, startCoordinator, tempDir, type CoordinatorProcess } from '../coordinator/support.ts'
import { synthModel } from '../support/synth-models.ts'

const ROOT = new URL('../..', import.meta.url).pathname
let coordinator: CoordinatorProcess | undefined
let cluster: LocalCluster | undefined
afterAll(async () => {
  await cluster?.stop()
  await coordinator?.stop()
})

test('nodes with no pins register with the coordinator and pin each other from it; the ring forms and serves', async () => {
  const db = join(tempDir(), 'coordinator.db')
  coordinator = await startCoordinator(db)
  const token = await createToken(db, 'lab')
  const model = await synthModel('qwen3', 'bf16')
  cluster = await startLocalCluster({
    nodes: 2,
    model,
    apiPort: 0,
    self: [process.execPath, `${ROOT}src/main.ts`],
    pinEachOther: false,
    extraArgs: [
      '--backend',
      'cpu',
      '--threads',
      '1',
      '--max-context',
      '128',
      '--max-batch',
      '1',
      '--model-id',
      'x',
      '--coordinator',
      coordinator.url,
      '--coordinator-token',
      token,
    ],
  })
  const r = await fetch(`${cluster.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', prompt: 'Hello', max_tokens: 3, temperature: 0 }),
  })
  expect(r.status).toBe(200)
  expect((await r.json()).usage.completion_tokens).toBe(3)
  // each node pinned the other from the coordinator
  for (const [rank, other] of [
    [0, 'node-1'],
    [1, 'node-0'],
  ] as const) {
    const pins = JSON.parse(readFileSync(join(cluster.homes[rank]!, 'pins.json'), 'utf8'))
    const pin = pins[other] ?? pins.pins?.[other]
    expect(pin?.source).toBe('coordinator')
  }
}, 120_000)
