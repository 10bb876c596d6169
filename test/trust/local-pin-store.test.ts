/** Which pin store a machine uses: Keychain on macOS with the bridge, the 0600 file elsewhere or when asked. */
import { describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  choosePinStore,
  importPins,
  keychainServiceFor,
  openLocalPinStore,
  parsePinStoreRequest,
} from '../../src/trust/local-pin-store.ts'
import { probeMacosBridge } from '../../src/trust/macos-bridge.ts'
import { FilePinStore, type Pin } from '../../src/trust/pinned-keys.ts'

const dir = () => mkdtempSync(join(tmpdir(), 'dbc-local-pins-'))
const pin = (n: number): Pin => ({
  publicKey: Buffer.alloc(33, n).toString('base64'),
  keyKind: 'software',
  source: 'coordinator',
  pinnedAt: n,
})
const noBridge = { available: false as const, reason: 'the macOS bridge exists only on macOS (this is linux)' }

describe('choice', () => {
  test('auto takes the Keychain when the bridge loads and the file otherwise, saying why', () => {
    expect(choosePinStore('auto', { available: true })).toEqual({ kind: 'keychain' })
    expect(choosePinStore('auto', noBridge)).toEqual({ kind: 'file', why: noBridge.reason })
    expect(choosePinStore('file', { available: true })).toEqual({ kind: 'file', why: 'DBCLUSTER_PIN_STORE=file' })
    expect(choosePinStore('keychain', { available: true })).toEqual({ kind: 'keychain' })
  })

  test('asking for the Keychain where it cannot be used, or for an unknown store, is a usage error with the way out', () => {
    expect(() => choosePinStore('keychain', noBridge)).toThrow(
      expect.objectContaining({
        code: 'E_USAGE',
        message: `DBCLUSTER_PIN_STORE=keychain, but the Keychain cannot be used: ${noBridge.reason}`,
      }),
    )
    expect(() => parsePinStoreRequest('vault')).toThrow(
      expect.objectContaining({ code: 'E_USAGE', hint: expect.stringContaining('unset it') }),
    )
    expect(parsePinStoreRequest(undefined)).toBe('auto')
    expect(parsePinStoreRequest(' File ')).toBe('file')
  })

  test('Keychain services are per state dir, like pin files', () => {
    expect(keychainServiceFor('/home/a/.dbcluster/pins.json')).toBe('dbcluster pins /home/a/.dbcluster')
    expect(keychainServiceFor('/tmp/x/pins.json')).not.toBe(keychainServiceFor('/tmp/y/pins.json'))
  })
})

describe('opening', () => {
  test('without the bridge the file store opens at the given path', () => {
    const path = join(dir(), 'pins.json')
    const local = openLocalPinStore(path, { request: 'auto', bridge: () => noBridge })
    expect(local.store).toBeInstanceOf(FilePinStore)
    expect(local.location).toBe(path)
    local.store.set('s1', pin(1))
    expect(new FilePinStore(path).get('s1')).toEqual(pin(1))
    expect(() => openLocalPinStore(path, { request: 'keychain', bridge: () => noBridge })).toThrow(
      expect.objectContaining({ code: 'E_USAGE' }),
    )
  })

  test('importing an old pin file copies only the pins the target lacks (an existing pin is never overwritten)', () => {
    const from = new FilePinStore(join(dir(), 'old.json'))
    const to = new FilePinStore(join(dir(), 'new.json'))
    from.set('a', pin(1))
    from.set('b', pin(2))
    to.set('b', pin(9))
    expect(importPins(from, to)).toEqual(['a'])
    expect(to.list()).toEqual({ a: pin(1), b: pin(9) })
  })

  const bridge = probeMacosBridge()
  test.skipIf(!bridge.available)(
    `on macOS, auto opens the Keychain and moves an old pin file into it${bridge.available ? '' : ` (skipped: ${bridge.reason})`}`,
    () => {
      const path = join(dir(), 'pins.json')
      new FilePinStore(path).set('old-serial', pin(3))
      const local = openLocalPinStore(path, { request: 'auto' })
      try {
        expect(local.choice).toEqual({ kind: 'keychain' })
        expect(local.store.get('old-serial')).toEqual(pin(3))
        expect(existsSync(path)).toBe(false)
        expect(existsSync(`${path}.imported-to-keychain`)).toBe(true)
      } finally {
        for (const serial of Object.keys(local.store.list())) local.store.delete(serial)
      }
    },
  )
})
