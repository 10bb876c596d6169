/** Two accounts on one coordinator: a stage registered under another account's token cannot join a head's cluster —
 * the head finds no such provider in its own account, refuses the handshake and says why; a stage of the head's account
 * then joins at the same address and serves. Real processes: a coordinator and two `serve` nodes on loopback. */
import { afterAll, expect, test } from 'bun:test'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { prepareLocalNodes, waitUntilServing } from '../../src/cluster/local-cluster.ts'
import { createToken, startCoordinator, tempDir, type CoordinatorProcess } from '../coordinator/support.ts'
import { synthModel } from '../support/synth-models.ts'
import { spawnServeNode, stopNodes } from '../support/serve-node.ts'
import { mintCa, mintDeviceLeaf, toPem } from '../support/test-certificates.ts'
import { loadLocalIdentity } from '../../src/trust/local-identity.ts'
import { mdaFreshnessCode } from '../../src/trust/mda.ts'

let coordinator: CoordinatorProcess | undefined
afterAll(async () => {
  await stopNodes()
  await coordinator?.stop()
})

async function until(what: string, check: () => boolean, detail?: () => string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${detail ? `: ${detail()}` : ''}`)
    await Bun.sleep(50)
  }
}

test("a stage of another account is refused at the handshake, named in the log; a stage of the head's account joins", async () => {
  const dir = tempDir()
  const db = join(dir, 'coordinator.db')
  // a test root stands in for Apple's; the head proves its serial and key with a chain minted under it
  const root = mintCa('Test Enterprise Attestation Root CA')
  const sub = mintCa('Test Enterprise Attestation Sub CA 1', root)
  writeFileSync(join(dir, 'root.pem'), root.pem)
  coordinator = await startCoordinator(db, ['--mda-root', join(dir, 'root.pem')])
  const alice = await createToken(db, 'alice')
  const bob = await createToken(db, 'bob')
  const model = await synthModel('qwen3', 'bf16')
  // a third state folder: another machine (its own key) of alice's for the same stage address
  const { homes, ports } = prepareLocalNodes(3, undefined, false)
  const peers = ports
    .slice(0, 2)
    .map((p) => `127.0.0.1:${p}`)
    .join(',')
  const common = [
    '--peers',
    peers,
    '--backend',
    'cpu',
    '--threads',
    '1',
    '--max-context',
    '128',
    '--max-batch',
    '1',
    '--coordinator',
    coordinator.url,
  ]
  const headKey = loadLocalIdentity(join(homes[0]!, 'identity.key')).identity.publicKey
  const chain = join(dir, 'node-0-mda.pem')
  writeFileSync(
    chain,
    toPem(mintDeviceLeaf(sub, { serial: 'node-0', freshnessCode: mdaFreshnessCode(headKey) })) + sub.pem,
  )
  const head = spawnServeNode(homes[0]!, [
    '--mda-chain',
    chain,
    ...common,
    '--rank',
    '0',
    '--node-name',
    'node-0',
    '--model',
    model,
    '--model-id',
    'x',
    '--port',
    '0',
    '--coordinator-token',
    alice,
  ])
  let stage = spawnServeNode(homes[1]!, [...common, '--rank', '1', '--node-name', 'node-1', '--coordinator-token', bob])

  await until('the head to refuse node-1', () =>
    /refused node-1: no provider with serial node-1 in account alice/.test(head.output()),
  )
  expect(head.output()).toContain('a node registered under another account cannot join this cluster')
  // nothing of the head's was pinned for bob's node, nor did it receive a single layer
  const pins = join(homes[0]!, 'pins.json')
  expect(existsSync(pins) ? Object.keys(JSON.parse(readFileSync(pins, 'utf8'))) : []).not.toContain('node-1')
  expect(head.output()).not.toMatch(/rank 1 joined|ring formed/)

  stage.proc.kill('SIGKILL')
  await stage.proc.exited
  // node-1's serial now belongs to bob (its key was proven under his account); a machine of alice's joins in its place
  stage = spawnServeNode(homes[2]!, [...common, '--rank', '1', '--node-name', 'alice-1', '--coordinator-token', alice])
  await until(
    'the head to serve',
    () => /listening on http/.test(head.output()),
    () => head.output().slice(-3000),
    90_000,
  )
  const url = /listening on (http:\/\/\S+)/.exec(head.output())![1]!
  await waitUntilServing(url, 90_000)
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', prompt: 'Hello', max_tokens: 2, temperature: 0 }),
  })
  expect(r.status).toBe(200)
  expect(JSON.parse(readFileSync(pins, 'utf8'))['alice-1'].source).toBe('coordinator')
  // the head's chain verified: its serial and key are Apple-vouched (a software key stays software trust, and says so)
  const key = await fetch(`${coordinator.url}/v1/cluster/peer-key?serial=node-0`, {
    headers: { authorization: `Bearer ${alice}` },
  }).then((r) => r.json())
  expect(key).toMatchObject({ serial: 'node-0', mda_verified: true, key_kind: 'software', trust_level: 'software' })
  // the formed cluster is vouched for as one: a roster over both, registered with each member's verdict
  const health = (await fetch(`${url}/health`).then((r) => r.json())) as {
    cluster_trust: { cluster_id: string; trust_level: string; members: { serial: string; attested: boolean }[] }
  }
  expect(health.cluster_trust.trust_level).toBe('software')
  expect(health.cluster_trust.members.map((m) => [m.serial, m.attested])).toEqual([
    ['node-0', true],
    ['alice-1', true],
  ])
  // (the stage, started with --coordinator, loads only after checking that roster: cluster-roster.test.ts)
}, 180_000)
