/** Pinned peer keys: which identity key each serial must present. A 0600 JSON file here; on macOS the Keychain store
 * (pin-store-keychain.ts) implements the same interface, and local-pin-store.ts picks one. Pins come from the
 * coordinator or a coordinator-signed roster; the handshake asks an Authorizer, built here from pins, a roster check,
 * or both. */
import { equalBytes } from '@noble/ciphers/utils.js'
import { existsSync } from 'node:fs'
import { TrustError } from './errors.ts'
import type { Authorization } from './handshake.ts'
import type { KeyKind } from './identity.ts'
import { readPrivateFile, writePrivateFile } from './private-file.ts'

export interface Pin {
  /** Base64 of the 33-byte compressed P-256 key. */
  publicKey: string
  keyKind: KeyKind
  /** Who vouched: 'coordinator', 'roster', or 'manual'. */
  source: string
  pinnedAt: number
}

export interface PinStore {
  get(serial: string): Pin | undefined
  set(serial: string, pin: Pin): void
  delete(serial: string): boolean
  list(): Record<string, Pin>
}

/** What the handshake calls for the peer's serial and identity key. */
export type Authorizer = (serial: string, publicKey: Uint8Array) => Authorization | Promise<Authorization>

/** Checks one stored pin (from the pin file or a Keychain item); `where` names it in the error. */
export function parsePin(value: unknown, where: string): Pin {
  const p = value as Partial<Pin> | null
  if (
    !p ||
    typeof p !== 'object' ||
    typeof p.publicKey !== 'string' ||
    (p.keyKind !== 'software' && p.keyKind !== 'secure-enclave') ||
    typeof p.source !== 'string' ||
    typeof p.pinnedAt !== 'number'
  ) {
    throw new TrustError('E_PIN_FILE', `${where} is malformed`, 're-pin it through the coordinator')
  }
  return { publicKey: p.publicKey, keyKind: p.keyKind, source: p.source, pinnedAt: p.pinnedAt }
}

function parsePins(text: string, path: string): Record<string, Pin> {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw new TrustError(
      'E_PIN_FILE',
      `${path} is not valid JSON`,
      'restore it from the coordinator (re-pin) or move it away',
    )
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    throw new TrustError('E_PIN_FILE', `${path} is not a pin map`)
  for (const [serial, pin] of Object.entries(raw as Record<string, unknown>))
    parsePin(pin, `${path}: the pin for '${serial}'`)
  return raw as Record<string, Pin>
}

/** The Linux pin store: one 0600 JSON file, refused when group or others can read it, rewritten atomically. */
export class FilePinStore implements PinStore {
  #pins: Record<string, Pin>
  constructor(readonly path: string) {
    this.#pins = existsSync(path) ? parsePins(readPrivateFile(path), path) : {}
  }
  get(serial: string): Pin | undefined {
    return Object.hasOwn(this.#pins, serial) ? this.#pins[serial] : undefined
  }
  set(serial: string, pin: Pin): void {
    this.#pins = { ...this.#pins, [serial]: pin }
    this.#save()
  }
  delete(serial: string): boolean {
    if (!Object.hasOwn(this.#pins, serial)) return false
    const { [serial]: _gone, ...rest } = this.#pins
    this.#pins = rest
    this.#save()
    return true
  }
  list(): Record<string, Pin> {
    return { ...this.#pins }
  }
  #save(): void {
    writePrivateFile(this.path, JSON.stringify(this.#pins, null, 2))
  }
}

const decodeKey = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'))

/** The handshake's authorize() over a pin store. */
export function authorizeByPins(store: PinStore): Authorizer {
  return (serial, key) => {
    const pin = store.get(serial)
    if (!pin) return 'not-pinned'
    return equalBytes(decodeKey(pin.publicKey), key) ? 'authorized' : 'key-mismatch'
  }
}

/** Authorization from a coordinator-signed roster the caller has already verified (coordinator/roster.ts verifyRoster):
 * its members' serials and keys act as pins for this cluster. */
export function authorizeByRoster(members: readonly { serial: string; public_key: string }[]): Authorizer {
  const bySerial = new Map(members.map((m) => [m.serial, decodeKey(m.public_key)]))
  return (serial, key) => {
    const pinned = bySerial.get(serial)
    if (!pinned) return 'not-pinned'
    return equalBytes(pinned, key) ? 'authorized' : 'key-mismatch'
  }
}

/** Asks each authorizer in turn: the first that knows the serial decides (a pin that differs is a mismatch, and is not
 * overridden by a later source); 'not-pinned' only when none knows it. */
export function firstKnown(...authorizers: Authorizer[]): Authorizer {
  return async (serial, key) => {
    for (const authorize of authorizers) {
      const verdict = await authorize(serial, key)
      if (verdict !== 'not-pinned') return verdict
    }
    return 'not-pinned'
  }
}

/** Adapts a yes/no callback (e.g. the coordinator's `isAuthorized(publicKey)`) to an Authorizer: no means not pinned. */
export function authorizeByCallback(
  isAuthorized: (publicKey: Uint8Array, serial: string) => boolean | Promise<boolean>,
): Authorizer {
  return async (serial, key) => ((await isAuthorized(key, serial)) ? 'authorized' : 'not-pinned')
}
