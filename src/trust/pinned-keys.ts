/** Pinned peer keys: which identity key each serial must present. A 0600 JSON file here; on macOS the Keychain store
 * (issue 9) implements the same interface. Pins come from the coordinator or a coordinator-signed roster. */
import { equalBytes } from '@noble/ciphers/utils.js'
import { existsSync } from 'node:fs'
import type { Authorization } from './handshake.ts'
import { readPrivateFile, writePrivateFile } from './private-file.ts'

export interface Pin {
  /** Base64 of the 33-byte compressed P-256 key. */
  publicKey: string
  keyKind: 'secure-enclave' | 'software'
  /** Who vouched: 'coordinator', 'roster', or 'manual'. */
  source: string
  pinnedAt: number
}

export interface PinStore {
  get(serial: string): Pin | undefined
  set(serial: string, pin: Pin): void
  list(): Record<string, Pin>
}

export class FilePinStore implements PinStore {
  #pins: Record<string, Pin>
  constructor(readonly path: string) {
    this.#pins = existsSync(path) ? (JSON.parse(readPrivateFile(path)) as Record<string, Pin>) : {}
  }
  get(serial: string): Pin | undefined {
    return this.#pins[serial]
  }
  set(serial: string, pin: Pin): void {
    this.#pins = { ...this.#pins, [serial]: pin }
    writePrivateFile(this.path, JSON.stringify(this.#pins, null, 2))
  }
  list(): Record<string, Pin> {
    return { ...this.#pins }
  }
}

/** The handshake's authorize() over a pin store. */
export function authorizeByPins(store: PinStore): (serial: string, key: Uint8Array) => Authorization {
  return (serial, key) => {
    const pin = store.get(serial)
    if (!pin) return 'not-pinned'
    return equalBytes(new Uint8Array(Buffer.from(pin.publicKey, 'base64')), key) ? 'authorized' : 'key-mismatch'
  }
}
