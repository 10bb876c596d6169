/** The roster on the serving path, against a real coordinator process: the head's vouchForCluster and a stage's
 * checkRoster, each refusal naming the member (stale attestation, changed key, another account's node, another
 * coordinator's roster, no roster at all), and the cluster's trust as the coordinator judged its members. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { p256 } from '@noble/curves/nist.js'
import { checkRoster, vouchForCluster } from '../../src/cluster/cluster-roster.ts'
import { CoordinatorClient } from '../../src/coordinator/client.ts'
import {
  attest,
  attester,
  createToken,
  identity,
  register,
  startCoordinator,
  tempDir,
  type CoordinatorProcess,
  type RawSocket,
} from '../coordinator/support.ts'

let coord: CoordinatorProcess
const tokens: Record<string, string> = {}
const sockets: RawSocket[] = []
const head = identity(71)
const stage = identity(72)
const stranger = identity(73)
const fast = { attempts: 1, baseMs: 10, maxMs: 10 }
const client = (account: string, coordinatorKey?: Uint8Array) =>
  new CoordinatorClient({ url: coord.url, token: tokens[account]!, retry: fast, coordinatorKey })
const joined = async (id = stage, serial = 's-1', timestamp?: number) =>
  JSON.stringify(await attest(id, serial, false, timestamp))

beforeAll(async () => {
  const db = join(tempDir(), 'coordinator.db')
  coord = await startCoordinator(db)
  tokens.alice = await createToken(db, 'alice')
  tokens.bob = await createToken(db, 'bob')
  for (const [account, id, serial] of [
    ['alice', head, 'h-1'],
    ['alice', stage, 's-1'],
    ['bob', stranger, 'b-1'],
  ] as const) {
    const { socket, reply } = await register(coord.url, tokens[account]!, {
      rdma_enabled: false,
      attestation: attester(id, serial, false),
    })
    expect(reply.attested).toBe(true)
    sockets.push(socket)
  }
})

afterAll(async () => {
  for (const s of sockets) s.ws.close()
  await coord?.stop()
})

describe('the head vouches for its cluster', () => {
  test('roster over the members, the cluster registered as one provider, trust = the weakest member', async () => {
    const v = await vouchForCluster(client('alice'), { serial: 'h-1', identity: head }, [
      { rank: 1, serial: 's-1', publicKey: stage.publicKey, attestation: await joined() },
    ])
    expect(v.roster.body.members.map((m) => m.serial)).toEqual(['h-1', 's-1'])
    expect(v.trust.trust_level).toBe('software')
    expect(v.trust.members).toEqual([
      { serial: 'h-1', attested: true, trust_level: 'software', reason: null },
      { serial: 's-1', attested: true, trust_level: 'software', reason: null },
    ])
    // the coordinator now lists the cluster among alice's providers
    const providers = (await fetch(`${coord.url}/v1/account/providers`, {
      headers: { authorization: `Bearer ${tokens.alice}` },
    }).then((r) => r.json())) as { providers: { serial: string; kind: string; trust_level: string }[] }
    expect(providers.providers).toContainEqual(
      expect.objectContaining({ serial: `cluster:${v.trust.cluster_id}`, kind: 'cluster', trust_level: 'software' }),
    )
    // and the stage accepts the roster: it names the stage and the head with the keys their link proved
    const body = await checkRoster(
      client('alice'),
      JSON.stringify(v.roster),
      { serial: 's-1', publicKey: stage.publicKey },
      { serial: 'h-1', publicKey: head.publicKey },
    )
    expect(body.cluster_id).toBe(v.trust.cluster_id)
    await v.registration.close()
  })

  test('a member with a stale attestation is refused, named with the reason', async () => {
    const stale = await joined(stage, 's-1', Date.now() - 3600_000)
    await expect(
      vouchForCluster(client('alice'), { serial: 'h-1', identity: head }, [
        { rank: 1, serial: 's-1', publicKey: stage.publicKey, attestation: stale },
      ]),
    ).rejects.toThrow(/members whose attestation the coordinator refused: s-1 \(attestation is stale/)
  })

  test('a member whose link proved another key than the coordinator knows is refused, named', async () => {
    await expect(
      vouchForCluster(client('alice'), { serial: 'h-1', identity: head }, [
        { rank: 1, serial: 's-1', publicKey: stranger.publicKey, attestation: await joined() },
      ]),
    ).rejects.toThrow('the coordinator knows s-1 by another key than the one its link proved')
  })

  test("another account's node, or one with no attestation, is refused", async () => {
    await expect(
      vouchForCluster(client('alice'), { serial: 'h-1', identity: head }, [
        { rank: 1, serial: 'b-1', publicKey: stranger.publicKey, attestation: await joined(stranger, 'b-1') },
      ]),
    ).rejects.toThrow(/would not vouch for this cluster: .*members that are not providers of account alice: b-1/)
    await expect(
      vouchForCluster(client('alice'), { serial: 'h-1', identity: head }, [
        { rank: 1, serial: 's-1', publicKey: stage.publicKey, attestation: '' },
      ]),
    ).rejects.toThrow('stage s-1 sent no attestation to relay')
  })
})

describe('a stage checks the roster before it loads', () => {
  let roster = ''
  beforeAll(async () => {
    const v = await vouchForCluster(client('alice'), { serial: 'h-1', identity: head }, [
      { rank: 1, serial: 's-1', publicKey: stage.publicKey, attestation: await joined() },
    ])
    roster = JSON.stringify(v.roster)
    await v.registration.close()
  })
  const me = { serial: 's-1', publicKey: stage.publicKey }
  const theHead = { serial: 'h-1', publicKey: head.publicKey }

  test('no roster (the head has no --coordinator) is refused', async () => {
    await expect(checkRoster(client('alice'), '', me, theHead)).rejects.toThrow(
      'the head sent no roster, and this stage runs with --coordinator',
    )
  })

  test('a roster signed by another coordinator key is refused', async () => {
    const other = p256.getPublicKey(new Uint8Array(32).fill(99), true)
    await expect(checkRoster(client('alice', other), roster, me, theHead)).rejects.toThrow(
      /the head's roster does not verify/,
    )
  })

  test('a tampered roster, a roster for another head, or one without this node is refused', async () => {
    const tampered = JSON.parse(roster)
    tampered.body.members[1].public_key = Buffer.from(stranger.publicKey).toString('base64')
    await expect(checkRoster(client('alice'), JSON.stringify(tampered), me, theHead)).rejects.toThrow(/does not verify/)
    await expect(
      checkRoster(client('alice'), roster, me, { serial: 'h-2', publicKey: head.publicKey }),
    ).rejects.toThrow("the roster's head is h-1, not this link's h-2")
    await expect(
      checkRoster(client('alice'), roster, { serial: 's-9', publicKey: stage.publicKey }, theHead),
    ).rejects.toThrow('the roster does not list this node (s-9)')
    await expect(
      checkRoster(client('alice'), roster, { serial: 's-1', publicKey: stranger.publicKey }, theHead),
    ).rejects.toThrow("the roster names s-1 with another key than this node's")
  })
})
