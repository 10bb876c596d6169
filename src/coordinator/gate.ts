/** The RDMA peer-list gate, pure: only an account that owns an attested, online, RDMA-enabled machine may see the list, and it never sees its own. */
import type { ProviderRecord } from './provider-record.ts'
import { trustLevelOf, type TrustLevel } from './trust-level.ts'

export interface RdmaPeer {
  serial: string
  public_key: string
  key_kind: ProviderRecord['keyKind']
  trust_level: TrustLevel
  hostname: string | null
}

export type GateVerdict = { allowed: true; peers: RdmaPeer[] } | { allowed: false; reason: string }

/** Attested, online, RDMA-enabled, a machine with a key: the only providers that count, on either side of the gate. */
export function isRdmaEligible(p: ProviderRecord): boolean {
  return (
    p.kind === 'machine' &&
    p.attested &&
    p.status === 'online' &&
    p.rdmaEnabled &&
    p.publicKey !== '' &&
    trustLevelOf(p) !== 'none'
  )
}

/**
 * Symmetric access (docs/coordinator.md §Peer list): `own` are the caller account's providers, `candidates` anyone's.
 * Candidates are re-filtered here even when the store pre-filtered them, so the rule lives in one tested place.
 */
export function rdmaPeersFor(
  accountId: number,
  own: readonly ProviderRecord[],
  candidates: readonly ProviderRecord[],
): GateVerdict {
  if (!own.some((p) => p.accountId === accountId && isRdmaEligible(p))) {
    return {
      allowed: false,
      reason:
        own.length === 0
          ? 'this account owns no provider; register an attested, RDMA-enabled machine first'
          : 'this account owns no attested, online, RDMA-enabled machine',
    }
  }
  const peers = candidates
    .filter((p) => p.accountId !== accountId && isRdmaEligible(p))
    .map((p) => ({
      serial: p.serial,
      public_key: p.publicKey,
      key_kind: p.keyKind,
      trust_level: trustLevelOf(p),
      hostname: p.hostname,
    }))
  return { allowed: true, peers }
}
