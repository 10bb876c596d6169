/** Pinned peer keys: which identity key each serial must present. A 0600 JSON file here; on macOS the Keychain store
 * (pin-store-keychain.ts) implements the same interface, and local-pin-store.ts picks one. Pins come from the
 * coordinator or a coordinator-signed roster; the handshake asks an Authorizer, built here from pins, a roster check,
 * or both. */
import { equalBytes } from '@noble/ciphers/utils.js'
import { consola } from 'consola'
import { existsSync, statSync } from 'node:fs'
import { TrustError } from './errors.ts'
import type { Authorization } from './handshake.ts'
import type { KeyKind } from './identity.ts'
import { readPrivateFile, writePrivateFile } from './private-file.ts'

export interface Pin {
  /** Base64 of the 33-byte compressed P-256 key. */
  publicKey: string
  keyKind: KeyKind
  /** Who vouched: 'coordinator', 'roster', 'manual' (`dbcluster trust pin`, `cluster setup`) or 'local-cluster'. */
  source: string
  pinnedAt: number
  /** When a handshake last accepted this key (ms since the epoch), written at most once a minute; absent until then
   * (and in pins written before it existed). */
  lastSeenAt?: number
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
    typeof p.pinnedAt !== 'number' ||
    (p.lastSeenAt !== undefined && typeof p.lastSeenAt !== 'number')
  ) {
    throw new TrustError('E_PIN_FILE', `${where} is malformed`, 're-pin it through the coordinator')
  }
  return pinRecord(p as Pin)
}

/** Exactly the fields a pin has (an absent lastSeenAt stays absent, so old records round-trip unchanged). */
export function pinRecord(p: Pin): Pin {
  const { publicKey, keyKind, source, pinnedAt, lastSeenAt } = p
  return lastSeenAt === undefined
    ? { publicKey, keyKind, source, pinnedAt }
    : { publicKey, keyKind, source, pinnedAt, lastSeenAt }
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

/** The Linux pin store: one 0600 JSON file, refused when group or others can read it, rewritten atomically. It re-reads
 * the file when it changed on disk, so a running node sees `dbcluster trust pin|forget` at its next handshake and does
 * not write back a pin another process removed. */
export class FilePinStore implements PinStore {
  #pins: Record<string, Pin> = {}
  #stamp = ''
  constructor(readonly path: string) {
    this.#refresh()
  }
  get(serial: string): Pin | undefined {
    this.#refresh()
    return Object.hasOwn(this.#pins, serial) ? this.#pins[serial] : undefined
  }
  set(serial: string, pin: Pin): void {
    this.#refresh()
    this.#pins = { ...this.#pins, [serial]: pin }
    this.#save()
  }
  delete(serial: string): boolean {
    this.#refresh()
    if (!Object.hasOwn(this.#pins, serial)) return false
    const { [serial]: _gone, ...rest } = this.#pins
    this.#pins = rest
    this.#save()
    return true
  }
  list(): Record<string, Pin> {
    this.#refresh()
    return { ...this.#pins }
  }
  #refresh(): void {
    const stamp = this.#currentStamp()
    if (stamp === this.#stamp) return
    this.#pins = stamp === 'absent' ? {} : parsePins(readPrivateFile(this.path), this.path)
    this.#stamp = stamp
  }
  #currentStamp(): string {
    if (!existsSync(this.path)) return 'absent'
    const s = statSync(this.path, { bigint: true })
    return `${s.ino}:${s.size}:${s.mtimeNs}`
  }
  #save(): void {
    writePrivateFile(this.path, JSON.stringify(this.#pins, null, 2))
    this.#stamp = this.#currentStamp()
  }
}

const log = consola.withTag('trust')
const decodeKey = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'))

/** How often a pin's lastSeenAt is rewritten: a busy link reconnecting must not rewrite the store on every handshake. */
export const LAST_SEEN_INTERVAL_MS = 60_000

/** The handshake's authorize() over a pin store. An accepted key stamps its pin's lastSeenAt (at most once a minute per
 * serial); a store that cannot be written does not fail the handshake. */
export function authorizeByPins(store: PinStore, options: { now?: () => number } = {}): Authorizer {
  const now = options.now ?? Date.now
  const stamped = new Map<string, number>()
  return (serial, key) => {
    const pin = store.get(serial)
    if (!pin) return 'not-pinned'
    if (!equalBytes(decodeKey(pin.publicKey), key)) return 'key-mismatch'
    const at = now()
    if (at - Math.max(pin.lastSeenAt ?? 0, stamped.get(serial) ?? 0) >= LAST_SEEN_INTERVAL_MS) {
      stamped.set(serial, at)
      try {
        // re-read first: a pin replaced meanwhile (another process) must not be written back over
        if (store.get(serial)?.publicKey === pin.publicKey) store.set(serial, { ...pinRecord(pin), lastSeenAt: at })
      } catch (error) {
        log.debug(`could not record when ${serial} was last seen: ${(error as Error).message}`)
      }
    }
    return 'authorized'
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
