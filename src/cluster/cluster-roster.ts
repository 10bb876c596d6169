/** With --coordinator, a formed pipeline is vouched for as one (docs/cluster.md §Roster): the head asks the coordinator
 * to sign a roster over the members (head first, then stages by rank), checks it names the keys the links' handshakes
 * proved, and registers the cluster as one provider, relaying each member's fresh attestation; the coordinator judges
 * every member and the cluster's trust is its weakest member's. Each stage checks the roster against the coordinator's
 * key before it loads a layer. Any failure names the member and leaves nothing applied. */
import type { CoordinatorClient } from '../coordinator/client.ts'
import { CoordinatorError } from '../coordinator/errors.ts'
import type { MemberVerdict, Registered } from '../coordinator/provider-messages.ts'
import type { ProviderConnection } from '../coordinator/provider-connection.ts'
import type { RosterBody, SignedRoster } from '../coordinator/roster.ts'
import type { TrustLevel } from '../coordinator/trust-level.ts'
import { DbcError } from '../errors.ts'
import { signAttestation } from '../trust/attestation.ts'
import { compressPublicKey, type Identity } from '../trust/identity.ts'
import { machineFacts } from '../trust/machine-info.ts'

export class RosterRefused extends DbcError {}

export interface ClusterTrust {
  cluster_id: string
  /** The weakest member's level, as the coordinator judged the relayed attestations. */
  trust_level: TrustLevel
  members: MemberVerdict[]
  /** When the roster stops vouching (ms since the epoch). */
  expires_at: number
}

export interface RosterStage {
  rank: number
  serial: string
  /** The key this stage's link handshake proved. */
  publicKey: Uint8Array
  /** Its attestation as it sent it in its join ('' when it sent none). */
  attestation: string
}

const b64 = (key: Uint8Array) => Buffer.from(compressPublicKey(key)).toString('base64')

/** The head: roster, key check, cluster registration. The returned connection keeps the cluster registered. */
export async function vouchForCluster(
  client: CoordinatorClient,
  head: { serial: string; identity: Identity },
  stages: readonly RosterStage[],
): Promise<{ roster: SignedRoster; trust: ClusterTrust; registration: ProviderConnection }> {
  const ordered = [...stages].sort((a, b) => a.rank - b.rank)
  let signed: { roster: SignedRoster; body: RosterBody }
  try {
    signed = await client.createRoster([head.serial, ...ordered.map((s) => s.serial)])
  } catch (error) {
    throw new RosterRefused(
      'E_ROSTER',
      `the coordinator would not vouch for this cluster: ${(error as Error).message}`,
      "each member must be a provider of this coordinator token's account, registered and not untrusted",
    )
  }
  const { roster, body } = signed
  const keys = [b64(head.identity.publicKey), ...ordered.map((s) => b64(s.publicKey))]
  body.members.forEach((m, i) => {
    if (m.public_key !== keys[i])
      throw new RosterRefused(
        'E_ROSTER',
        `the coordinator knows ${m.serial} by another key than the one its link proved`,
        `if the machine's key changed, forget it at the coordinator ('dbcluster coordinator provider forget ${m.serial}') and let it register again`,
      )
  })
  const attestations: unknown[] = []
  for (const s of ordered) {
    if (!s.attestation)
      throw new RosterRefused(
        'E_ROSTER',
        `stage ${s.serial} sent no attestation to relay`,
        'run the same dbcluster on every node',
      )
    try {
      attestations.push(JSON.parse(s.attestation))
    } catch {
      throw new RosterRefused('E_ROSTER', `stage ${s.serial} sent an attestation that is not JSON`)
    }
  }
  const registration = client.connectProvider({
    heartbeatMs: 10_000,
    // the head's own attestation is signed afresh for every connection; the stages' are the ones they joined with
    registration: async () => ({
      type: 'register_cluster',
      roster,
      attestations: [
        await signAttestation(head.identity, { ...machineFacts(), serial: head.serial, rdmaEnabled: false }),
        ...attestations,
      ],
    }),
  })
  let reply: Registered
  try {
    reply = await registration.registered
  } catch (error) {
    await registration.close()
    throw new RosterRefused('E_ROSTER', `the coordinator refused to register this cluster: ${(error as Error).message}`)
  }
  const failing = (reply.members ?? []).filter((m) => !m.attested)
  if (failing.length || !reply.attested) {
    await registration.close()
    throw new RosterRefused(
      'E_ROSTER',
      `members whose attestation the coordinator refused: ${failing.map((m) => `${m.serial} (${m.reason})`).join('; ') || reply.reason}`,
      'check the clocks (a stale attestation is refused) and that every node runs the same dbcluster',
    )
  }
  return {
    roster,
    registration,
    trust: {
      cluster_id: body.cluster_id,
      trust_level: reply.trust_level,
      members: reply.members ?? [],
      expires_at: body.expires_at,
    },
  }
}

/** A stage: the roster verifies against the coordinator's key, names this node with its key, and the head (its first
 * member) with the key this control link's handshake proved. Returns the verified body. */
export async function checkRoster(
  client: CoordinatorClient,
  rosterJson: string,
  me: { serial: string; publicKey: Uint8Array },
  head: { serial: string; publicKey: Uint8Array },
): Promise<RosterBody> {
  if (!rosterJson)
    throw new RosterRefused(
      'E_ROSTER',
      'the head sent no roster, and this stage runs with --coordinator',
      'start the head with the same --coordinator (a cluster is vouched for as a whole, or not at all)',
    )
  let body: RosterBody
  try {
    body = await client.verifyRoster(JSON.parse(rosterJson))
  } catch (error) {
    const why = error instanceof CoordinatorError || error instanceof SyntaxError ? error.message : String(error)
    throw new RosterRefused('E_ROSTER', `the head's roster does not verify: ${why}`)
  }
  const first = body.members[0]
  if (!first || first.serial !== head.serial || first.public_key !== b64(head.publicKey))
    throw new RosterRefused(
      'E_ROSTER',
      `the roster's head is ${first?.serial ?? 'nobody'}, not this link's ${head.serial}`,
    )
  const mine = body.members.find((m) => m.serial === me.serial)
  if (!mine) throw new RosterRefused('E_ROSTER', `the roster does not list this node (${me.serial})`)
  if (mine.public_key !== b64(me.publicKey))
    throw new RosterRefused('E_ROSTER', `the roster names ${me.serial} with another key than this node's`)
  return body
}
