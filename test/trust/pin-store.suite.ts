/** One suite for every PinStore (the 0600 file, the macOS Keychain): same answers, same persistence, same refusals. */
import { afterAll, describe, expect, test } from 'bun:test'
import { authorizeByPins, LAST_SEEN_INTERVAL_MS, type Pin, type PinStore } from '../../src/trust/pinned-keys.ts'
import { testIdentity } from '../support/identities.ts'

export interface PinStoreHarness {
  /** A fresh, empty store. */
  create(): PinStore
  /** A second handle on the same storage (a new process would see this). */
  reopen(store: PinStore): PinStore
  /** Puts bytes that are not a pin where `serial`'s pin would be. */
  corrupt(store: PinStore, serial: string): void
  cleanup?(): void
}

const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64')
const pinOf = (seed: number, source = 'coordinator'): Pin => ({
  publicKey: b64(testIdentity(seed).publicKey),
  keyKind: 'secure-enclave',
  source,
  pinnedAt: 1_700_000_000_000 + seed,
})

export function runPinStoreSuite(name: string, harness: PinStoreHarness, skipReason?: string): void {
  const t = (title: string, fn: () => void) =>
    skipReason ? test.skip(`${title} (skipped: ${skipReason})`, fn) : test(title, fn)
  describe(`PinStore conformance: ${name}`, () => {
    if (harness.cleanup) afterAll(() => harness.cleanup!())

    t('an empty store knows nobody', () => {
      const store = harness.create()
      expect(store.get('bob')).toBeUndefined()
      expect(store.list()).toEqual({})
      expect(store.delete('bob')).toBe(false)
    })

    t('a pin is stored exactly, seen by a second handle, and replaced by a later set', () => {
      const store = harness.create()
      store.set('SERIAL-A', pinOf(1))
      store.set('SERIAL-B', pinOf(2, 'roster'))
      const other = harness.reopen(store)
      expect(other.get('SERIAL-A')).toEqual(pinOf(1))
      expect(other.list()).toEqual({ 'SERIAL-A': pinOf(1), 'SERIAL-B': pinOf(2, 'roster') })
      store.set('SERIAL-A', pinOf(3, 'manual'))
      expect(harness.reopen(store).get('SERIAL-A')).toEqual(pinOf(3, 'manual'))
    })

    t('delete removes for good, and only the named pin', () => {
      const store = harness.create()
      store.set('a', pinOf(1))
      store.set('b', pinOf(2))
      expect(store.delete('a')).toBe(true)
      expect(store.delete('a')).toBe(false)
      expect(harness.reopen(store).list()).toEqual({ b: pinOf(2) })
    })

    t('serials that look like object keys or carry spaces and non-ASCII are ordinary serials', () => {
      const store = harness.create()
      for (const serial of ['__proto__', 'constructor', 'C02 X1 ÄÖ-東京']) store.set(serial, pinOf(4))
      expect(store.get('toString')).toBeUndefined()
      const listed = harness.reopen(store).list()
      expect(Object.keys(listed).sort()).toEqual(['C02 X1 ÄÖ-東京', '__proto__', 'constructor'])
      expect(Object.getPrototypeOf(listed)).toBe(Object.prototype)
      expect(harness.reopen(store).get('__proto__')).toEqual(pinOf(4))
    })

    t('the handshake authorizer over the store accepts exactly the pinned key', () => {
      const store = harness.create()
      store.set('bob', pinOf(2))
      const authorize = authorizeByPins(harness.reopen(store))
      expect(authorize('bob', testIdentity(2).publicKey)).toBe('authorized')
      expect(authorize('bob', testIdentity(3).publicKey)).toBe('key-mismatch')
      expect(authorize('carol', testIdentity(2).publicKey)).toBe('not-pinned')
    })

    t('lastSeenAt round-trips, and a pin without it (written before it existed) loads without one', () => {
      const store = harness.create()
      store.set('old', pinOf(1))
      store.set('seen', { ...pinOf(2), lastSeenAt: 1_700_000_060_000 })
      const other = harness.reopen(store)
      expect(Object.keys(other.get('old')!)).not.toContain('lastSeenAt')
      expect(other.get('seen')).toEqual({ ...pinOf(2), lastSeenAt: 1_700_000_060_000 })
    })

    t('the authorizer stamps lastSeenAt when it accepts a key, at most once a minute per serial', () => {
      const store = harness.create()
      store.set('bob', pinOf(2))
      let now = 1_800_000_000_000
      const authorize = authorizeByPins(harness.reopen(store), { now: () => now })
      expect(authorize('bob', testIdentity(3).publicKey)).toBe('key-mismatch')
      expect(harness.reopen(store).get('bob')!.lastSeenAt).toBeUndefined()
      expect(authorize('bob', testIdentity(2).publicKey)).toBe('authorized')
      expect(harness.reopen(store).get('bob')).toEqual({ ...pinOf(2), lastSeenAt: now })
      const first = now
      now += LAST_SEEN_INTERVAL_MS - 1
      expect(authorize('bob', testIdentity(2).publicKey)).toBe('authorized')
      expect(harness.reopen(store).get('bob')!.lastSeenAt).toBe(first)
      now += 1
      expect(authorize('bob', testIdentity(2).publicKey)).toBe('authorized')
      expect(harness.reopen(store).get('bob')!.lastSeenAt).toBe(now)
    })

    t('a stored pin that is not a pin is refused with E_PIN_FILE, not trusted', () => {
      const store = harness.create()
      store.set('bob', pinOf(2))
      harness.corrupt(store, 'bob')
      expect(() => harness.reopen(store).get('bob')).toThrow(expect.objectContaining({ code: 'E_PIN_FILE' }))
    })
  })
}
