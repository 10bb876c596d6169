/** Attestation blobs: what a machine says about itself (hardware, OS, binary, key, RDMA), as canonical JSON signed by its identity key. */
import { canonicalJson } from './canonical-json.ts'
import { compressPublicKey, verifySignature, type Identity, type KeyKind } from './identity.ts'

export const ATTESTATION_VERSION = 1

const base64 = {
  encode: (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64'),
  decode: (text: string): Uint8Array => {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new TypeError('not base64')
    return new Uint8Array(Buffer.from(text, 'base64'))
  },
}

export interface AttestationBody {
  version: number
  /** Hardware serial on macOS, /etc/machine-id elsewhere. */
  serial: string
  hostname: string
  chip: string
  memoryBytes: number
  osVersion: string
  /** SHA-256 (hex) of the running dbcluster executable. */
  binaryHash: string
  /** Base64 of the 33-byte compressed P-256 identity key. */
  publicKey: string
  keyKind: KeyKind
  /** RDMA as the capability gate decided it, not as the operator asked for it. */
  rdmaEnabled: boolean
  /** Milliseconds since the Unix epoch. */
  timestamp: number
  /** The nonce the coordinator sent on this provider socket: binds the blob to one connection of one account, so a
   * captured blob cannot be replayed on another (absent for attestations printed by `identity show`). */
  challenge?: string
}

export interface SignedAttestation {
  body: AttestationBody
  /** Base64 of the 64-byte compact ECDSA-P256-SHA256 signature over canonicalJson(body). */
  signature: string
}

export type AttestationVerdict = { ok: true; body: AttestationBody } | { ok: false; reason: string }

export async function signAttestation(
  identity: Identity,
  fields: Omit<AttestationBody, 'version' | 'publicKey' | 'keyKind' | 'timestamp'> & { timestamp?: number },
): Promise<SignedAttestation> {
  const body: AttestationBody = {
    ...fields,
    version: ATTESTATION_VERSION,
    publicKey: base64.encode(identity.publicKey),
    keyKind: identity.kind,
    timestamp: fields.timestamp ?? Date.now(),
  }
  const signature = await identity.sign(new TextEncoder().encode(canonicalJson(body)))
  return { body, signature: base64.encode(signature) }
}

const MAX_CHALLENGE = 128

const FIELDS: Record<Exclude<keyof AttestationBody, 'challenge'>, 'string' | 'number' | 'boolean'> = {
  version: 'number',
  serial: 'string',
  hostname: 'string',
  chip: 'string',
  memoryBytes: 'number',
  osVersion: 'string',
  binaryHash: 'string',
  publicKey: 'string',
  keyKind: 'string',
  rdmaEnabled: 'boolean',
  timestamp: 'number',
}

/** Checks shape, signature and (when maxAgeMs is given) freshness. Never throws on untrusted input. */
export function verifyAttestation(
  input: unknown,
  options: { now?: number; maxAgeMs?: number; maxSkewMs?: number } = {},
): AttestationVerdict {
  if (!input || typeof input !== 'object') return { ok: false, reason: 'attestation is not an object' }
  const { body, signature } = input as { body?: unknown; signature?: unknown }
  if (!body || typeof body !== 'object') return { ok: false, reason: 'attestation has no body' }
  if (typeof signature !== 'string') return { ok: false, reason: 'attestation has no signature' }
  for (const [key, type] of Object.entries(FIELDS)) {
    if (typeof (body as Record<string, unknown>)[key] !== type)
      return { ok: false, reason: `field '${key}' must be a ${type}` }
  }
  const typed = body as AttestationBody
  const challenge = (body as Record<string, unknown>).challenge
  if (challenge !== undefined && (typeof challenge !== 'string' || challenge.length > MAX_CHALLENGE))
    return { ok: false, reason: `field 'challenge' must be a string of at most ${MAX_CHALLENGE} characters` }
  if (typed.version !== ATTESTATION_VERSION)
    return { ok: false, reason: `unsupported attestation version ${typed.version}` }
  if (typed.keyKind !== 'software' && typed.keyKind !== 'secure-enclave')
    return { ok: false, reason: `unknown key kind '${typed.keyKind}'` }
  let publicKey: Uint8Array, sig: Uint8Array
  try {
    publicKey = compressPublicKey(base64.decode(typed.publicKey))
    sig = base64.decode(signature)
  } catch {
    return { ok: false, reason: 'public key or signature is not valid base64 / not a P-256 point' }
  }
  if (!verifySignature(publicKey, new TextEncoder().encode(canonicalJson(typed)), sig)) {
    return { ok: false, reason: 'signature does not verify against the attested public key' }
  }
  const now = options.now ?? Date.now()
  if (options.maxAgeMs !== undefined && now - typed.timestamp > options.maxAgeMs) {
    return { ok: false, reason: `attestation is stale (${Math.round((now - typed.timestamp) / 1000)} s old)` }
  }
  if (typed.timestamp - now > (options.maxSkewMs ?? 5 * 60_000)) {
    return { ok: false, reason: 'attestation timestamp is in the future (check the clock)' }
  }
  return { ok: true, body: typed }
}
