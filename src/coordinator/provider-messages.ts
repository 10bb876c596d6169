/** The provider WebSocket protocol (GET /v1/provider/ws): what a node sends, what the coordinator answers (docs/coordinator.md §Provider socket). */
import type { KeyKind } from '../trust/identity.ts'
import type { ProviderKind, ProviderStatus } from './provider-record.ts'
import type { SignedRoster } from './roster.ts'
import type { TrustLevel } from './trust-level.ts'

/** Register this machine: with an attestation blob (attested), or with a bare serial and key (never attested). */
export interface Register {
  type: 'register'
  /** What the operator asked for; the signed attestation's rdmaEnabled wins when they differ. */
  rdma_enabled: boolean
  attestation?: unknown
  /** Apple managed device attestation for this serial and key (base64 DER, leaf first): the evidence for `hardware`. */
  mda_chain?: string[]
  serial?: string
  public_key?: string
  key_kind?: KeyKind
}

/** Close code for a socket whose provider registered again on a newer connection. */
export const CLOSE_REPLACED = 4001

export interface Heartbeat {
  type: 'heartbeat'
}

/** The head of a formed cluster registers the cluster as one provider, relaying each member's fresh attestation. */
export interface RegisterCluster {
  type: 'register_cluster'
  roster: SignedRoster
  attestations: unknown[]
}

export type ProviderCommand = Register | Heartbeat | RegisterCluster

export interface MemberVerdict {
  serial: string
  attested: boolean
  trust_level: TrustLevel
  reason: string | null
}

export interface Registered {
  type: 'registered'
  serial: string
  kind: ProviderKind
  status: ProviderStatus
  attested: boolean
  trust_level: TrustLevel
  rdma_enabled: boolean
  /** Why the provider is not attested or is untrusted, or why its level is lower than it claims; null when all is well. */
  reason: string | null
  /** An Apple managed device attestation chain verified for this serial and key. */
  mda_verified?: boolean
  /** Present when the claimed rdma_enabled contradicted the signed one (the signed one was kept). */
  rdma_mismatch?: { claimed: boolean; attested: boolean }
  /** For a cluster: each member's verdict. */
  members?: MemberVerdict[]
}

/** Sent first on every provider socket: the registration's attestation must sign this nonce (replay protection). */
export interface Challenge {
  type: 'challenge'
  nonce: string
}

export interface HeartbeatAcknowledged {
  type: 'heartbeat_acknowledged'
  status: ProviderStatus
}

export interface ProtocolError {
  type: 'error'
  code: string
  message: string
}

export type CoordinatorEvent = Challenge | Registered | HeartbeatAcknowledged | ProtocolError
