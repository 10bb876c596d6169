/** Cluster rosters: the membership a coordinator vouches for (members, their keys and trust, expiry), signed with its key; cluster trust = the lowest member's. */
import { canonicalJson } from '../trust/canonical-json.ts'
import { verifySignature, type Identity, type KeyKind } from '../trust/identity.ts'
import { isTrustLevel, minTrust, type TrustLevel } from './trust-level.ts'

export const ROSTER_VERSION = 1

export interface RosterMember {
  serial: string
  /** Base64 of the member's 33-byte compressed P-256 identity key. */
  public_key: string
  key_kind: KeyKind
  trust_level: TrustLevel
  attested: boolean
}

export interface RosterBody {
  version: number
  cluster_id: string
  /** The first member: it forms the cluster and may register it as one provider. */
  head: string
  members: RosterMember[]
  trust_level: TrustLevel
  issued_at: number
  expires_at: number
  /** Base64 of the signing coordinator's compressed key, so a roster names who vouched for it. */
  coordinator_key: string
}

export interface SignedRoster {
  body: RosterBody
  /** Base64 of the 64-byte compact ECDSA-P256-SHA256 signature over canonicalJson(body). */
  signature: string
}

export type RosterVerdict = { ok: true; body: RosterBody } | { ok: false; reason: string }

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64')
const encode = (body: RosterBody) => new TextEncoder().encode(canonicalJson(body))

export async function signRoster(
  signer: Identity,
  input: { clusterId: string; members: RosterMember[]; issuedAt: number; ttlMs: number },
): Promise<SignedRoster> {
  const body: RosterBody = {
    version: ROSTER_VERSION,
    cluster_id: input.clusterId,
    head: input.members[0]!.serial,
    members: input.members,
    trust_level: minTrust(input.members.map((m) => m.trust_level)),
    issued_at: input.issuedAt,
    expires_at: input.issuedAt + input.ttlMs,
    coordinator_key: b64(signer.publicKey),
  }
  return { body, signature: b64(await signer.sign(encode(body))) }
}

function shapeError(body: unknown): string | undefined {
  if (!body || typeof body !== 'object') return 'roster has no body'
  const b = body as Record<string, unknown>
  for (const k of ['cluster_id', 'head', 'coordinator_key'] as const)
    if (typeof b[k] !== 'string') return `roster field '${k}' must be a string`
  for (const k of ['version', 'issued_at', 'expires_at'] as const)
    if (typeof b[k] !== 'number') return `roster field '${k}' must be a number`
  if (!isTrustLevel(b.trust_level)) return "roster field 'trust_level' is not a trust level"
  if (!Array.isArray(b.members) || b.members.length === 0) return 'roster has no members'
  for (const m of b.members as unknown[]) {
    const r = m as Record<string, unknown>
    if (
      !m ||
      typeof m !== 'object' ||
      typeof r.serial !== 'string' ||
      typeof r.public_key !== 'string' ||
      !isTrustLevel(r.trust_level) ||
      typeof r.attested !== 'boolean'
    ) {
      return 'roster member is malformed'
    }
  }
  return undefined
}

/** Checks shape, that the expected coordinator signed it, that it has not expired, and that its trust is its weakest member's. Never throws. */
export function verifyRoster(
  roster: unknown,
  coordinatorKey: Uint8Array,
  options: { now: number; maxSkewMs?: number },
): RosterVerdict {
  if (!roster || typeof roster !== 'object') return { ok: false, reason: 'roster is not an object' }
  const { body, signature } = roster as { body?: unknown; signature?: unknown }
  const shape = shapeError(body)
  if (shape) return { ok: false, reason: shape }
  if (typeof signature !== 'string') return { ok: false, reason: 'roster has no signature' }
  const b = body as RosterBody
  if (b.version !== ROSTER_VERSION) return { ok: false, reason: `unsupported roster version ${b.version}` }
  if (b.coordinator_key !== b64(coordinatorKey))
    return { ok: false, reason: 'roster was signed by a different coordinator' }
  if (!verifySignature(coordinatorKey, encode(b), new Uint8Array(Buffer.from(signature, 'base64')))) {
    return { ok: false, reason: 'roster signature does not verify against the coordinator key' }
  }
  if (options.now >= b.expires_at)
    return { ok: false, reason: `roster expired at ${new Date(b.expires_at).toISOString()}` }
  if (b.issued_at - options.now > (options.maxSkewMs ?? 5 * 60_000))
    return { ok: false, reason: 'roster was issued in the future (check the clock)' }
  if (b.head !== b.members[0]!.serial) return { ok: false, reason: 'roster head is not its first member' }
  if (b.trust_level !== minTrust(b.members.map((m) => m.trust_level)))
    return { ok: false, reason: 'roster trust is not its lowest member trust' }
  return { ok: true, body: b }
}
