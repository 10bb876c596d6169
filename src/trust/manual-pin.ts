/** Pinning by hand (`dbcluster trust pin`, `cluster setup`): a key given as text or read from the peer, checked against
 * what is already pinned for the serial. A key that differs from an existing pin is never replaced unless asked. */
import { UsageError } from '../errors.ts'
import { TrustError } from './errors.ts'
import { compressPublicKey, fingerprint } from './identity.ts'
import { pinRecord, type Pin, type PinStore } from './pinned-keys.ts'

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/** Base64 of a SEC1 P-256 public key, compressed (33 bytes) or uncompressed (65), as the 33-byte compressed form;
 * `what` names the flag in the error. */
export function parsePublicKey(text: string, what: string): Uint8Array {
  const trimmed = text.trim()
  const shown = trimmed.length > 24 ? `${trimmed.slice(0, 24)}…` : trimmed
  const hint = "copy the 'public key' line of 'dbcluster identity show' on the peer"
  if (!trimmed || !BASE64.test(trimmed)) throw new UsageError(`${what} '${shown}' is not base64`, hint)
  const bytes = new Uint8Array(Buffer.from(trimmed, 'base64'))
  if (bytes.byteLength !== 33 && bytes.byteLength !== 65)
    throw new UsageError(
      `${what} is ${bytes.byteLength} bytes; a P-256 public key is 33 (compressed) or 65 (uncompressed)`,
      hint,
    )
  try {
    return compressPublicKey(bytes)
  } catch {
    throw new UsageError(`${what} is not a point on the P-256 curve`, hint)
  }
}

export type PinPlan = { action: 'new' } | { action: 'unchanged'; current: Pin } | { action: 'replace'; current: Pin }

/** What pinning `publicKey` for `serial` would do; a different key already pinned is refused unless `replace`. */
export function planPin(store: PinStore, serial: string, publicKey: Uint8Array, replace: boolean): PinPlan {
  const current = store.get(serial)
  if (!current) return { action: 'new' }
  if (current.publicKey === Buffer.from(publicKey).toString('base64')) return { action: 'unchanged', current }
  if (!replace) {
    const old = fingerprint(new Uint8Array(Buffer.from(current.publicKey, 'base64')))
    throw new TrustError(
      'E_PIN_EXISTS',
      `${serial} is already pinned to a different key (fingerprint ${old}, ${current.source}, ${new Date(current.pinnedAt).toISOString()})`,
      "keys are never re-pinned silently: if that machine really has a new key, compare the new fingerprint with its 'dbcluster identity show' and pass --replace",
    )
  }
  return { action: 'replace', current }
}

/** A pin made by hand. A handshake does not show where a key lives, so it claims the lower kind, software. */
export function manualPin(publicKey: Uint8Array, now = Date.now()): Pin {
  return pinRecord({
    publicKey: Buffer.from(publicKey).toString('base64'),
    keyKind: 'software',
    source: 'manual',
    pinnedAt: now,
  })
}
