/** A cluster registered as one provider, as a pure decision: the head relays each member's fresh attestation against a roster this coordinator signed. */
import { verifyAttestation } from '../trust/attestation.ts'
import type { MemberVerdict, RegisterCluster, Registered } from './provider-messages.ts'
import type { ProviderRecord } from './provider-record.ts'
import { verifyRoster } from './roster.ts'
import { minTrust, trustLevelOf } from './trust-level.ts'

export interface ClusterRegistrationInput {
  command: RegisterCluster
  accountId: number
  coordinatorKey: Uint8Array
  /** The stored provider for a serial (the head's owner is checked against the caller). */
  lookup: (serial: string) => ProviderRecord | undefined
  now: number
  maxAgeMs: number
}

export type ClusterRegistrationDecision =
  | { accepted: false; code: 'E_INVALID' | 'E_FORBIDDEN'; message: string }
  | { accepted: true; record: ProviderRecord; reply: Registered; warnings: string[] }

export const clusterSerial = (clusterId: string) => `cluster:${clusterId}`

export function decideClusterRegistration(input: ClusterRegistrationInput): ClusterRegistrationDecision {
  const { command, now } = input
  const roster = verifyRoster(command.roster, input.coordinatorKey, { now })
  if (!roster.ok) return { accepted: false, code: 'E_INVALID', message: `roster rejected: ${roster.reason}` }
  const body = roster.body
  const head = input.lookup(body.head)
  if (!head || head.accountId !== input.accountId) {
    return {
      accepted: false,
      code: 'E_FORBIDDEN',
      message: `only the account that owns the head (${body.head}) may register this cluster`,
    }
  }
  const members: MemberVerdict[] = body.members.map((m) => {
    const blob = command.attestations.find((a) => (a as { body?: { serial?: unknown } })?.body?.serial === m.serial)
    if (!blob)
      return {
        serial: m.serial,
        attested: false,
        trust_level: 'none',
        reason: 'no attestation relayed for this member',
      }
    const v = verifyAttestation(blob, { now, maxAgeMs: input.maxAgeMs })
    if (!v.ok) return { serial: m.serial, attested: false, trust_level: 'none', reason: v.reason }
    if (v.body.publicKey !== m.public_key)
      return {
        serial: m.serial,
        attested: false,
        trust_level: 'none',
        reason: 'attested key differs from the roster key',
      }
    const stored = input.lookup(m.serial)
    if (stored?.status === 'untrusted')
      return { serial: m.serial, attested: false, trust_level: 'none', reason: 'member is marked untrusted' }
    return {
      serial: m.serial,
      attested: true,
      // hardware only where this coordinator verified the member's MDA chain for this very key
      trust_level: trustLevelOf({
        attested: true,
        status: 'online',
        keyKind: v.body.keyKind,
        mdaVerified: stored?.mdaVerified === true && stored.publicKey === v.body.publicKey,
      }),
      reason: null,
    }
  })
  const attested = members.every((m) => m.attested)
  const trust = minTrust(members.map((m) => m.trust_level))
  const headMember = body.members[0]!
  const failing = members.filter((m) => !m.attested)
  const reason = failing.length
    ? `members not attested: ${failing.map((m) => `${m.serial} (${m.reason})`).join('; ')}`
    : null
  const record: ProviderRecord = {
    serial: clusterSerial(body.cluster_id),
    accountId: input.accountId,
    kind: 'cluster',
    publicKey: headMember.public_key,
    keyKind: headMember.key_kind,
    keyVerified: attested,
    attested,
    // every member's chain verified: the cluster's own level is not what caps it
    mdaVerified: attested && trust === 'hardware',
    status: attested ? 'online' : 'untrusted',
    statusReason: reason,
    rdmaEnabled: false,
    hostname: head.hostname,
    chip: null,
    memoryBytes: null,
    attestation: JSON.stringify(command.attestations),
    clusterTrust: trust,
    registeredAt: input.lookup(clusterSerial(body.cluster_id))?.registeredAt ?? now,
    lastSeen: now,
  }
  const reply: Registered = {
    type: 'registered',
    serial: record.serial,
    kind: 'cluster',
    status: record.status,
    attested,
    trust_level: attested ? trust : 'none',
    rdma_enabled: false,
    reason,
    members,
  }
  return { accepted: true, record, reply, warnings: reason ? [`cluster ${body.cluster_id}: ${reason}`] : [] }
}
