/** A sealed tensor-parallel group with --coordinator is vouched for as one, like a pipeline: rank 0 gets a signed roster
 * over the ranks and registers the group, /health shows its trust; a rank started with --coordinator refuses a rank 0
 * that sends no roster, naming why. Real processes: a coordinator and two `serve --tp 2` ranks on loopback. */
import { afterAll, expect, test } from 'bun:test'
import { join } from 'node:path'
import { prepareLocalNodes, waitUntilServing } from '../../src/cluster/local-cluster.ts'
import { createToken, startCoordinator, tempDir, type CoordinatorProcess } from '../coordinator/support.ts'
import { spawnServeNode, stopNodes } from '../support/serve-node.ts'
import { synthModel } from '../support/synth-models.ts'

let coordinator: CoordinatorProcess | undefined
afterAll(async () => {
  await stopNodes()
  await coordinator?.stop()
})

async function until(what: string, check: () => boolean, detail: () => string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${detail()}`)
    await Bun.sleep(50)
  }
}

const ARGS = ['--backend', 'cpu', '--threads', '1', '--max-context', '128', '--model-id', 'x', '--tp-timeout', '20']

test('rank 0 has the group vouched for (trust in /health); a rank with --coordinator refuses a rank 0 without a roster', async () => {
  const db = join(tempDir(), 'coordinator.db')
  coordinator = await startCoordinator(db)
  const token = await createToken(db, 'alice')
  const model = await synthModel('llama', 'bf16')
  const { homes, ports } = prepareLocalNodes(2, undefined, false)
  const tp = (rank: number) => [
    ...['--tp', '2', '--tp-rank', String(rank), '--tp-listen', `127.0.0.1:${ports[0]}`],
    ...['--tp-peer', `127.0.0.1:${ports[0]}`, '--node-name', `rank-${rank}`, '--model', model, ...ARGS],
  ]
  const withCoordinator = ['--coordinator', coordinator.url, '--coordinator-token', token]

  const r0 = spawnServeNode(homes[0]!, [...tp(0), '--port', '0', ...withCoordinator])
  const r1 = spawnServeNode(homes[1]!, [...tp(1), ...withCoordinator])
  await until(
    'rank 0 to serve',
    () => /listening on http/.test(r0.output()),
    () => r0.output().slice(-3000),
    90_000,
  )
  const url = /listening on (http:\/\/\S+)/.exec(r0.output())![1]!
  await waitUntilServing(url, 60_000)
  const health = (await fetch(`${url}/health`).then((r) => r.json())) as {
    cluster_trust: { trust_level: string; members: { serial: string; attested: boolean }[] }
  }
  expect(health.cluster_trust.trust_level).toBe('software')
  expect(health.cluster_trust.members.map((m) => [m.serial, m.attested])).toEqual([
    ['rank-0', true],
    ['rank-1', true],
  ])
  const answer = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', prompt: 'Hello', max_tokens: 2, temperature: 0 }),
  })
  expect(answer.status).toBe(200)
  r0.proc.kill('SIGTERM')
  r1.proc.kill('SIGTERM')
  await Promise.all([r0.proc.exited, r1.proc.exited])

  // rank 0 without a coordinator (pins only: the two already know each other), rank 1 with one: rank 1 refuses
  const bare = spawnServeNode(homes[0]!, [...tp(0), '--port', '0'])
  const strict = spawnServeNode(homes[1]!, [...tp(1), ...withCoordinator])
  await until(
    'rank 1 to refuse',
    () => /the head sent no roster, and this stage runs with --coordinator/.test(strict.output()),
    () => strict.output().slice(-3000),
  )
  expect(await strict.proc.exited).not.toBe(0)
  bare.proc.kill('SIGKILL')
}, 180_000)
