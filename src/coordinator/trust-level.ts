/** Trust levels a coordinator vouches for, their order, and the rule that a cluster is only as trusted as its weakest member. */
import type { KeyKind } from '../trust/identity.ts'

/** hardware: an attested Secure Enclave key with evidence beyond its own signature (Apple's managed device attestation,
 * verified by the coordinator); software: any other attested key — a self-signed attestation proves possession of a key,
 * not where it lives, so a Secure Enclave claim without that evidence is software; none: not attested, or untrusted. */
export type TrustLevel = 'none' | 'software' | 'hardware'

const RANK: Record<TrustLevel, number> = { none: 0, software: 1, hardware: 2 }

export function trustLevelOf(p: {
  attested: boolean
  status: string
  keyKind: KeyKind
  mdaVerified?: boolean
  clusterTrust?: TrustLevel | null
}): TrustLevel {
  if (!p.attested || p.status === 'untrusted') return 'none'
  const own: TrustLevel = p.keyKind === 'secure-enclave' && p.mdaVerified === true ? 'hardware' : 'software'
  return p.clusterTrust ? minTrust([own, p.clusterTrust]) : own
}

/** The lowest of the levels; 'none' for an empty list (an empty cluster vouches for nothing). */
export function minTrust(levels: readonly TrustLevel[]): TrustLevel {
  if (levels.length === 0) return 'none'
  return levels.reduce((low, l) => (RANK[l] < RANK[low] ? l : low))
}

export function isTrustLevel(value: unknown): value is TrustLevel {
  return value === 'none' || value === 'software' || value === 'hardware'
}

/** Why a provider has the level it has, where the claim says more than the evidence. */
export function trustReason(p: {
  attested: boolean
  status: string
  keyKind: KeyKind
  mdaVerified?: boolean
}): string | null {
  if (!p.attested || p.status === 'untrusted') return null
  if (p.keyKind === 'secure-enclave' && p.mdaVerified !== true)
    return 'claims a Secure Enclave key, but no Apple managed device attestation (MDA) was verified: software trust'
  return null
}
