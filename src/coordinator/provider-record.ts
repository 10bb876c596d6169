/** What the coordinator remembers about one provider (a machine, or a cluster registered by its head). */
import type { KeyKind } from '../trust/identity.ts'
import type { TrustLevel } from './trust-level.ts'

export type ProviderStatus = 'online' | 'offline' | 'untrusted'
export type ProviderKind = 'machine' | 'cluster'

export interface ProviderRecord {
  serial: string
  accountId: number
  kind: ProviderKind
  /** Base64 of the 33-byte compressed P-256 identity key. */
  publicKey: string
  keyKind: KeyKind
  /** The stored key was proven once by a valid attestation: from then on it is never replaced silently. */
  keyVerified: boolean
  /** The latest registration carried an attestation that verified (signature and freshness). */
  attested: boolean
  status: ProviderStatus
  statusReason: string | null
  /** An Apple managed device attestation chain verified for this serial and key (the evidence `hardware` needs). */
  mdaVerified: boolean
  /** The signed value when attested (the claim never overrides it). */
  rdmaEnabled: boolean
  hostname: string | null
  chip: string | null
  memoryBytes: number | null
  /** The last attestation blob received, as JSON (kept for audit). */
  attestation: string | null
  /** For a cluster: the lowest member trust, which caps the cluster's level; null for a machine. */
  clusterTrust: TrustLevel | null
  registeredAt: number
  lastSeen: number
}
