/** Provider registration as a pure decision: verify the attestation (signature, freshness, this socket's challenge) and
 * any Apple managed device attestation, reconcile the rdma claim (the signed value wins), never re-pin a proven key
 * silently, and let a serial move between accounts only on Apple's word. */
import type { X509Certificate } from 'node:crypto'
import { verifyAttestation, type AttestationBody } from '../trust/attestation.ts'
import { verifyMdaChain } from '../trust/mda.ts'
import { compressPublicKey, type KeyKind } from '../trust/identity.ts'
import type { Register, Registered } from './provider-messages.ts'
import type { ProviderRecord } from './provider-record.ts'
import { isSerial } from './schemas.ts'
import { trustLevelOf, trustReason } from './trust-level.ts'

export interface RegistrationInput {
  command: Register
  accountId: number
  /** The stored provider for a serial, if any. */
  lookup: (serial: string) => ProviderRecord | undefined
  now: number
  /** Freshness window for the attestation's timestamp. */
  maxAgeMs: number
  /** The nonce sent on this socket; an attestation must sign it to count (undefined: none was sent, nothing verifies). */
  challenge: string | undefined
  /** Trust anchors for managed device attestation chains (Apple's root in production). */
  mdaRoots: readonly X509Certificate[]
}

export type RegistrationDecision =
  | { accepted: false; code: 'E_SERIAL_TAKEN' | 'E_INVALID'; message: string }
  | { accepted: true; record: ProviderRecord; reply: Registered; warnings: string[] }

interface Claim {
  serial: string
  publicKey: string
  keyKind: KeyKind
  rdmaEnabled: boolean
  hostname: string | null
  chip: string | null
  memoryBytes: number | null
}

/** Canonical base64 of a compressed key, or undefined when the text is not a P-256 point. */
function normalizeKey(text: unknown): string | undefined {
  if (typeof text !== 'string') return undefined
  try {
    return Buffer.from(compressPublicKey(new Uint8Array(Buffer.from(text, 'base64')))).toString('base64')
  } catch {
    return undefined
  }
}

/** The identifiers a blob claims, read before (and regardless of) its signature, as the seeds' coordinator does. */
function claimOf(body: Partial<AttestationBody>, claimedRdma: boolean): Claim | undefined {
  const publicKey = normalizeKey(body.publicKey)
  if (!isSerial(body.serial) || !publicKey) return undefined
  return {
    serial: body.serial,
    publicKey,
    keyKind: body.keyKind === 'secure-enclave' ? 'secure-enclave' : 'software',
    rdmaEnabled: typeof body.rdmaEnabled === 'boolean' ? body.rdmaEnabled : claimedRdma,
    hostname: typeof body.hostname === 'string' ? body.hostname.slice(0, 255) : null,
    chip: typeof body.chip === 'string' ? body.chip.slice(0, 255) : null,
    memoryBytes: typeof body.memoryBytes === 'number' && Number.isFinite(body.memoryBytes) ? body.memoryBytes : null,
  }
}

export function decideRegistration(input: RegistrationInput): RegistrationDecision {
  const { command, accountId, now } = input
  const warnings: string[] = []
  let claim: Claim | undefined
  let attested = false
  let mdaVerified = false
  let reason: string | null = null
  let rdmaMismatch: Registered['rdma_mismatch']

  if (command.attestation !== undefined) {
    const verdict = verifyAttestation(command.attestation, { now, maxAgeMs: input.maxAgeMs })
    const body = ((command.attestation as { body?: unknown }).body ?? {}) as Partial<AttestationBody>
    claim = claimOf(verdict.ok ? verdict.body : body, command.rdma_enabled)
    if (!claim)
      return { accepted: false, code: 'E_INVALID', message: 'attestation names no valid serial and P-256 public key' }
    if (verdict.ok && (input.challenge === undefined || verdict.body.challenge !== input.challenge)) {
      reason =
        "attestation rejected: it does not sign this connection's challenge (a blob captured elsewhere, or a dbcluster older than the coordinator)"
    } else if (verdict.ok) {
      attested = true
      if (command.rdma_enabled !== verdict.body.rdmaEnabled) {
        rdmaMismatch = { claimed: command.rdma_enabled, attested: verdict.body.rdmaEnabled }
        warnings.push(
          `provider ${claim.serial} claimed rdma_enabled=${command.rdma_enabled} but its signed attestation says ${verdict.body.rdmaEnabled}; keeping the signed value`,
        )
      }
    } else {
      reason = `attestation rejected: ${verdict.reason}`
    }
    if (attested && command.mda_chain) {
      const mda = verifyMdaChain(
        command.mda_chain,
        { serial: claim.serial, publicKey: new Uint8Array(Buffer.from(claim.publicKey, 'base64')) },
        { roots: input.mdaRoots, now },
      )
      if (mda.ok) mdaVerified = true
      else {
        reason = `managed device attestation rejected: ${mda.reason}`
        warnings.push(`provider ${claim.serial}: ${reason}`)
      }
    }
  } else {
    const publicKey = normalizeKey(command.public_key)
    if (!command.serial || !publicKey)
      return { accepted: false, code: 'E_INVALID', message: "'public_key' is not a P-256 point" }
    claim = {
      serial: command.serial,
      publicKey,
      keyKind: command.key_kind ?? 'software',
      rdmaEnabled: command.rdma_enabled,
      hostname: null,
      chip: null,
      memoryBytes: null,
    }
    reason = 'registered without an attestation'
  }

  const existing = input.lookup(claim.serial)
  // A proven key binds the serial to its account, and only Apple's word (a verified MDA chain for this serial) moves a
  // serial that another account claimed without it: a serial is a name anyone can type, a verified chain is not.
  const takeover = existing !== undefined && existing.accountId !== accountId && mdaVerified && !existing.mdaVerified
  if (existing && existing.accountId !== accountId && !takeover && (existing.keyVerified || !attested)) {
    return {
      accepted: false,
      code: 'E_SERIAL_TAKEN',
      message: existing.mdaVerified
        ? `serial ${claim.serial} is registered to another account with a verified Apple device attestation; its coordinator's operator can free it with 'dbcluster coordinator provider forget ${claim.serial}'`
        : `serial ${claim.serial} is registered to another account; this machine can prove the serial is its own with an Apple managed device attestation (serve --mda-chain), or the coordinator's operator can free it with 'dbcluster coordinator provider forget ${claim.serial}'`,
    }
  }
  if (takeover)
    warnings.push(
      `serial ${claim.serial} moved to this account: its machine proved it with a verified Apple device attestation; the earlier claim (another account, no such proof) is dropped`,
    )
  if (existing?.kind === 'cluster')
    return { accepted: false, code: 'E_SERIAL_TAKEN', message: `serial ${claim.serial} names a cluster` }

  const sameOwner = existing !== undefined && !takeover
  const keyChanged = sameOwner && existing.keyVerified && existing.publicKey !== claim.publicKey
  const keep = keyChanged || (sameOwner && existing.keyVerified && !attested)
  let status: ProviderRecord['status'] = 'online'
  if (keyChanged) {
    status = 'untrusted'
    reason =
      'identity key differs from the one proven before; the coordinator never re-pins silently (forget the provider to accept the new key)'
    warnings.push(`provider ${claim.serial} presented a new identity key; marked untrusted, old key kept`)
  } else if (command.attestation !== undefined && !attested) {
    status = 'untrusted'
    warnings.push(`provider ${claim.serial}: ${reason}`)
  }

  const record: ProviderRecord = {
    serial: claim.serial,
    accountId,
    kind: 'machine',
    publicKey: keep ? existing!.publicKey : claim.publicKey,
    keyKind: keep ? existing!.keyKind : claim.keyKind,
    keyVerified: keep ? true : attested,
    attested,
    mdaVerified: keep ? existing!.mdaVerified : mdaVerified,
    status,
    statusReason: reason,
    rdmaEnabled: claim.rdmaEnabled,
    hostname: claim.hostname,
    chip: claim.chip,
    memoryBytes: claim.memoryBytes,
    attestation: command.attestation === undefined ? null : JSON.stringify(command.attestation),
    clusterTrust: null,
    registeredAt: sameOwner ? existing.registeredAt : now,
    lastSeen: now,
  }
  const reply: Registered = {
    type: 'registered',
    serial: record.serial,
    kind: 'machine',
    status: record.status,
    attested: record.attested,
    trust_level: trustLevelOf(record),
    rdma_enabled: record.rdmaEnabled,
    reason: record.statusReason ?? trustReason(record),
    mda_verified: record.mdaVerified,
    ...(rdmaMismatch ? { rdma_mismatch: rdmaMismatch } : {}),
  }
  return { accepted: true, record, reply, warnings }
}
