/** Trust levels a coordinator vouches for, their order, and the rule that a cluster is only as trusted as its weakest member. */
import type { KeyKind } from '../trust/identity.ts'

/** hardware: attested Secure Enclave key; software: attested key file; none: not attested, or marked untrusted. */
export type TrustLevel = 'none' | 'software' | 'hardware'

const RANK: Record<TrustLevel, number> = { none: 0, software: 1, hardware: 2 }

export function trustLevelOf(p: { attested: boolean; status: string; keyKind: KeyKind; clusterTrust?: TrustLevel | null }): TrustLevel {
  if (!p.attested || p.status === 'untrusted') return 'none'
  const own: TrustLevel = p.keyKind === 'secure-enclave' ? 'hardware' : 'software'
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
