/** The macOS pin store: one Keychain generic password per pinned serial (service = this state dir's pin namespace,
 * account = the serial, data = the pin as JSON), through the macOS bridge. The file-based login keychain, not the
 * data-protection one, which an unsigned CLI cannot use (design/mlx-c.md §8). Same interface as FilePinStore. */
import { TrustError } from './errors.ts'
import type { MacosBridge } from './macos-bridge.ts'
import { parsePin, pinRecord, type Pin, type PinStore } from './pinned-keys.ts'

/** A serial becomes a Keychain account name and a line of the bridge's list: no control characters, not empty. */
export function checkSerialForKeychain(serial: string): void {
  if (!serial || /[\u0000-\u001f\u007f]/.test(serial)) {
    throw new TrustError(
      'E_PIN_SERIAL',
      `serial ${JSON.stringify(serial)} cannot be pinned in the Keychain (empty or control characters)`,
      'check the peer’s attestation',
    )
  }
}

export class KeychainPinStore implements PinStore {
  constructor(
    private readonly bridge: MacosBridge,
    readonly service: string,
  ) {}

  get(serial: string): Pin | undefined {
    const data = this.bridge.keychainGet(this.service, serial)
    if (!data) return undefined
    let value: unknown
    try {
      value = JSON.parse(new TextDecoder().decode(data))
    } catch {
      value = null
    }
    return parsePin(value, `Keychain item '${serial}' of '${this.service}'`)
  }

  set(serial: string, pin: Pin): void {
    checkSerialForKeychain(serial)
    this.bridge.keychainSet(this.service, serial, new TextEncoder().encode(JSON.stringify(pinRecord(pin))))
  }

  delete(serial: string): boolean {
    return this.bridge.keychainDelete(this.service, serial)
  }

  list(): Record<string, Pin> {
    const entries: [string, Pin][] = []
    for (const serial of this.bridge.keychainList(this.service)) {
      const pin = this.get(serial)
      if (pin) entries.push([serial, pin])
    }
    // fromEntries defines own properties, so a serial named "__proto__" stays a serial
    return Object.fromEntries(entries)
  }
}
