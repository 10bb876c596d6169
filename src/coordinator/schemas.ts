/** Request validation at the edge: size limits and hand-written parsers from unknown JSON to typed requests (400 malformed, 422 invalid). */
import type { KeyKind } from '../trust/identity.ts'
import { MDA_MAX_CHAIN } from '../trust/mda.ts'
import { CoordinatorError } from './errors.ts'
import type { ProviderCommand } from './provider-messages.ts'

export const LIMITS = {
  /** POST bodies (a roster request of 64 serials is about 3 KiB). */
  httpBodyBytes: 16 * 1024,
  /** One provider socket message (a cluster registration relays up to 64 attestations of ~700 bytes). */
  socketMessageBytes: 64 * 1024,
  rosterMembers: 64,
  rosterTtlSeconds: { min: 60, max: 7 * 24 * 3600, default: 24 * 3600 },
} as const

const SERIAL = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/
const BASE64 = /^[A-Za-z0-9+/]{1,200}={0,2}$/

const invalid = (message: string) => new CoordinatorError('E_INVALID', message)

export function isSerial(value: unknown): value is string {
  return typeof value === 'string' && SERIAL.test(value)
}

/** JSON text → value, or 400. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw new CoordinatorError('E_MALFORMED', 'body is not valid JSON')
  }
}

function object(value: unknown, what: string): Record<string, unknown> {
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw invalid(`${what} must be a JSON object`)
  return value as Record<string, unknown>
}

function onlyKeys(o: Record<string, unknown>, allowed: readonly string[], what: string): void {
  const extra = Object.keys(o).filter((k) => !allowed.includes(k))
  if (extra.length)
    throw invalid(`${what} has unknown field${extra.length > 1 ? 's' : ''} ${extra.map((k) => `'${k}'`).join(', ')}`)
}

/** `?serial=` of GET /v1/cluster/peer-key: a missing one is malformed (400), a wrongly shaped one invalid (422). */
export function parseSerialQuery(value: string | undefined): string {
  if (value === undefined || value === '')
    throw new CoordinatorError('E_MALFORMED', "query parameter 'serial' is required")
  if (!isSerial(value)) throw invalid("'serial' must be 1-128 characters of A-Z a-z 0-9 . _ : -")
  return value
}

export interface RosterRequest {
  members: string[]
  ttlSeconds: number
}

export function parseRosterRequest(value: unknown): RosterRequest {
  const o = object(value, 'roster request')
  onlyKeys(o, ['members', 'ttl_seconds'], 'roster request')
  const { members, ttl_seconds: ttl } = o
  if (!Array.isArray(members) || members.length === 0 || members.length > LIMITS.rosterMembers) {
    throw invalid(`'members' must be an array of 1 to ${LIMITS.rosterMembers} serials`)
  }
  if (!members.every(isSerial)) throw invalid('every member must be a serial (1-128 characters of A-Z a-z 0-9 . _ : -)')
  if (new Set(members).size !== members.length) throw invalid("'members' lists a serial twice")
  const { min, max } = LIMITS.rosterTtlSeconds
  if (ttl !== undefined && (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < min || ttl > max)) {
    throw invalid(`'ttl_seconds' must be an integer from ${min} to ${max}`)
  }
  return { members: members as string[], ttlSeconds: (ttl as number | undefined) ?? LIMITS.rosterTtlSeconds.default }
}

const isKeyKind = (v: unknown): v is KeyKind => v === 'software' || v === 'secure-enclave'

/** One provider socket message → a typed command, or E_MALFORMED / E_INVALID. */
export function parseProviderCommand(text: string): ProviderCommand {
  const o = object(parseJson(text), 'message')
  switch (o.type) {
    case 'heartbeat':
      onlyKeys(o, ['type'], 'heartbeat')
      return { type: 'heartbeat' }
    case 'register': {
      onlyKeys(o, ['type', 'rdma_enabled', 'attestation', 'mda_chain', 'serial', 'public_key', 'key_kind'], 'register')
      if (typeof o.rdma_enabled !== 'boolean') throw invalid("register needs a boolean 'rdma_enabled'")
      if (o.attestation !== undefined) {
        if (o.serial !== undefined || o.public_key !== undefined || o.key_kind !== undefined) {
          throw invalid('register carries either an attestation or a bare serial/public_key/key_kind, not both')
        }
        object(o.attestation, 'attestation')
        const chain = o.mda_chain
        if (
          chain !== undefined &&
          (!Array.isArray(chain) ||
            chain.length === 0 ||
            chain.length > MDA_MAX_CHAIN ||
            !chain.every((c) => typeof c === 'string'))
        )
          throw invalid(`'mda_chain' must be an array of 1 to ${MDA_MAX_CHAIN} base64 DER certificates, leaf first`)
        return {
          type: 'register',
          rdma_enabled: o.rdma_enabled,
          attestation: o.attestation,
          ...(chain ? { mda_chain: chain as string[] } : {}),
        }
      }
      if (o.mda_chain !== undefined) throw invalid("'mda_chain' needs an attestation (it vouches for the attested key)")
      if (!isSerial(o.serial)) throw invalid("register without an attestation needs a 'serial'")
      if (typeof o.public_key !== 'string' || !BASE64.test(o.public_key))
        throw invalid("register without an attestation needs a base64 'public_key'")
      if (!isKeyKind(o.key_kind)) throw invalid("'key_kind' must be 'software' or 'secure-enclave'")
      return {
        type: 'register',
        rdma_enabled: o.rdma_enabled,
        serial: o.serial,
        public_key: o.public_key,
        key_kind: o.key_kind,
      }
    }
    case 'register_cluster': {
      onlyKeys(o, ['type', 'roster', 'attestations'], 'register_cluster')
      const roster = object(o.roster, 'roster')
      if (!roster.body || typeof roster.body !== 'object' || typeof roster.signature !== 'string')
        throw invalid("'roster' must be {body, signature}")
      if (
        !Array.isArray(o.attestations) ||
        o.attestations.length === 0 ||
        o.attestations.length > LIMITS.rosterMembers
      ) {
        throw invalid(`'attestations' must be an array of 1 to ${LIMITS.rosterMembers} attestation blobs`)
      }
      return { type: 'register_cluster', roster: roster as never, attestations: o.attestations }
    }
    default:
      throw invalid(`unknown message type ${JSON.stringify(o.type)}; expected register, heartbeat or register_cluster`)
  }
}
