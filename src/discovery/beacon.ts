/** Signed UDP beacons: a node announces (serial, identity key, link port, address) on the cable; a receiver trusts one only
 * when the signature verifies, the sender address matches, it is fresh, and the key is the one pinned for that serial. */
import { canonicalJson } from '../trust/canonical-json.ts'
import { compressPublicKey, verifySignature, type Identity } from '../trust/identity.ts'

export const BEACON_VERSION = 1
/** Default UDP port for beacons on the link. */
export const BEACON_PORT = 47390
const MAX_BEACON_BYTES = 2048

export interface BeaconBody {
  v: number
  serial: string
  /** Base64 of the 33-byte compressed P-256 identity key. */
  publicKey: string
  /** The sender's link-local address and the TCP port of its sealed link listener. */
  address: string
  port: number
  /** Milliseconds since the epoch. */
  ts: number
  cluster?: string
}

export interface Beacon {
  body: BeaconBody
  signature: string
}

export type BeaconVerdict = { ok: true; body: BeaconBody } | { ok: false; reason: string }

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64')

export async function signBeacon(identity: Identity, fields: Omit<BeaconBody, 'v' | 'publicKey'>): Promise<Uint8Array> {
  const body: BeaconBody = { v: BEACON_VERSION, publicKey: b64(identity.publicKey), ...fields }
  const signature = await identity.sign(new TextEncoder().encode(canonicalJson(body)))
  return new TextEncoder().encode(JSON.stringify({ body, signature: b64(signature) }))
}

export interface BeaconCheck {
  /** The UDP source address the datagram came from. */
  from: string
  now: number
  maxAgeMs?: number
  /** Decides whether this key may speak for this serial (a pinned key, or the coordinator's peer list). */
  isTrusted: (serial: string, publicKey: string) => boolean
}

/** Parses and checks one datagram. Never throws on hostile input. */
export function verifyBeacon(datagram: Uint8Array, check: BeaconCheck): BeaconVerdict {
  if (datagram.byteLength > MAX_BEACON_BYTES)
    return { ok: false, reason: `beacon of ${datagram.byteLength} bytes exceeds ${MAX_BEACON_BYTES}` }
  let parsed: Beacon
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(datagram))
  } catch {
    return { ok: false, reason: 'beacon is not JSON' }
  }
  const body = parsed?.body as BeaconBody | undefined
  if (!body || typeof parsed.signature !== 'string') return { ok: false, reason: 'beacon lacks body or signature' }
  if (body.v !== BEACON_VERSION)
    return { ok: false, reason: `beacon version ${String(body.v)} is not ${BEACON_VERSION}` }
  if (typeof body.serial !== 'string' || typeof body.publicKey !== 'string' || typeof body.address !== 'string') {
    return { ok: false, reason: 'beacon fields have the wrong types' }
  }
  if (!Number.isInteger(body.port) || body.port < 1 || body.port > 65535 || typeof body.ts !== 'number') {
    return { ok: false, reason: 'beacon port or timestamp is invalid' }
  }
  let key: Uint8Array
  try {
    key = compressPublicKey(new Uint8Array(Buffer.from(body.publicKey, 'base64')))
  } catch {
    return { ok: false, reason: 'beacon public key is not a P-256 point' }
  }
  const signature = new Uint8Array(Buffer.from(parsed.signature, 'base64'))
  if (!verifySignature(key, new TextEncoder().encode(canonicalJson(body)), signature)) {
    return { ok: false, reason: `beacon from ${check.from} has a bad signature` }
  }
  if (body.address !== check.from)
    return { ok: false, reason: `beacon claims ${body.address} but came from ${check.from}` }
  if (Math.abs(check.now - body.ts) > (check.maxAgeMs ?? 30_000))
    return { ok: false, reason: `beacon from ${check.from} is stale or from the future` }
  if (!check.isTrusted(body.serial, body.publicKey)) {
    return { ok: false, reason: `beacon from ${body.serial} at ${check.from}: key is not pinned for that serial` }
  }
  return { ok: true, body }
}
