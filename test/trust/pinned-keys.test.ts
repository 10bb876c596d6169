/** Pin store and authorizers: the file is 0600 and validated, rosters and callbacks plug into the same handshake hook. */
import { describe, expect, test } from 'bun:test'
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  authorizeByCallback,
  authorizeByPins,
  authorizeByRoster,
  FilePinStore,
  firstKnown,
} from '../../src/trust/pinned-keys.ts'
import { testIdentity } from '../support/identities.ts'
import { runPinStoreSuite } from './pin-store.suite.ts'

const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64')
const [alice, bob, mallory] = [testIdentity(1), testIdentity(2), testIdentity(3)]
const dir = () => mkdtempSync(join(tmpdir(), 'dbc-pins-'))

describe('pin file', () => {
  test('a pin file readable by others, or malformed, is refused with a code that says which', () => {
    const path = join(dir(), 'pins.json')
    new FilePinStore(path).set('bob', {
      publicKey: b64(bob.publicKey),
      keyKind: 'software',
      source: 'manual',
      pinnedAt: 1,
    })
    chmodSync(path, 0o644)
    expect(() => new FilePinStore(path)).toThrow(
      expect.objectContaining({ code: 'E_KEY_PERMISSIONS', hint: `run 'chmod 600 ${path}'` }),
    )
    writeFileSync(path, '{"bob": {"publicKey": 3}}', { mode: 0o600 })
    chmodSync(path, 0o600)
    expect(() => new FilePinStore(path)).toThrow(expect.objectContaining({ code: 'E_PIN_FILE' }))
    writeFileSync(path, 'not json')
    expect(() => new FilePinStore(path)).toThrow(expect.objectContaining({ code: 'E_PIN_FILE' }))
  })

  test('delete removes a pin for good; inherited object keys are never pins', () => {
    const path = join(dir(), 'pins.json')
    const store = new FilePinStore(path)
    store.set('bob', { publicKey: b64(bob.publicKey), keyKind: 'software', source: 'coordinator', pinnedAt: 1 })
    expect(store.delete('bob')).toBe(true)
    expect(store.delete('bob')).toBe(false)
    expect(new FilePinStore(path).list()).toEqual({})
    expect(authorizeByPins(store)('constructor', bob.publicKey)).toBe('not-pinned')
  })
})

describe('pin file shared by processes', () => {
  test('a handle sees pins another handle (another process) wrote or removed, and never writes a removed one back', () => {
    const path = join(dir(), 'pins.json')
    const node = new FilePinStore(path) // a running node's handle
    const cli = new FilePinStore(path) // `dbcluster trust pin|forget`
    const pin = (key: Uint8Array) => ({
      publicKey: b64(key),
      keyKind: 'software' as const,
      source: 'manual',
      pinnedAt: 1,
    })
    cli.set('bob', pin(bob.publicKey))
    expect(authorizeByPins(node)('bob', bob.publicKey)).toBe('authorized')
    cli.set('alice', pin(alice.publicKey))
    expect(cli.delete('bob')).toBe(true)
    expect(authorizeByPins(node)('bob', bob.publicKey)).toBe('not-pinned')
    node.set('carol', pin(mallory.publicKey))
    expect(Object.keys(new FilePinStore(path).list()).sort()).toEqual(['alice', 'carol'])
  })

  test('a last-seen stamp does not write back a key replaced meanwhile', () => {
    const path = join(dir(), 'pins.json')
    const store = new FilePinStore(path)
    store.set('bob', { publicKey: b64(bob.publicKey), keyKind: 'software', source: 'manual', pinnedAt: 1 })
    // the stamp re-reads the pin just before writing: a pin replaced in between is left alone
    const racing = {
      get: (serial: string) => store.get(serial),
      set: (serial: string, p: Parameters<FilePinStore['set']>[1]) => store.set(serial, p),
      delete: (serial: string) => store.delete(serial),
      list: () => store.list(),
    }
    let calls = 0
    racing.get = (serial) => {
      const got = store.get(serial)
      if (++calls === 1)
        store.set('bob', { publicKey: b64(mallory.publicKey), keyKind: 'software', source: 'manual', pinnedAt: 2 })
      return got
    }
    expect(authorizeByPins(racing)('bob', bob.publicKey)).toBe('authorized')
    expect(new FilePinStore(path).get('bob')).toEqual({
      publicKey: b64(mallory.publicKey),
      keyKind: 'software',
      source: 'manual',
      pinnedAt: 2,
    })
  })
})

describe('authorizers', () => {
  test('a verified roster acts as pins for its members', () => {
    const roster = authorizeByRoster([{ serial: 'alice', public_key: b64(alice.publicKey) }])
    expect(roster('alice', alice.publicKey)).toBe('authorized')
    expect(roster('alice', mallory.publicKey)).toBe('key-mismatch')
    expect(roster('mallory', mallory.publicKey)).toBe('not-pinned')
  })

  test('firstKnown: a pin decides before the roster, and a pin mismatch is not overridden', async () => {
    const path = join(dir(), 'pins.json')
    const store = new FilePinStore(path)
    store.set('alice', { publicKey: b64(alice.publicKey), keyKind: 'software', source: 'coordinator', pinnedAt: 1 })
    const roster = authorizeByRoster([
      { serial: 'alice', public_key: b64(mallory.publicKey) },
      { serial: 'bob', public_key: b64(bob.publicKey) },
    ])
    const authorize = firstKnown(authorizeByPins(store), roster)
    expect(await authorize('alice', alice.publicKey)).toBe('authorized')
    expect(await authorize('alice', mallory.publicKey)).toBe('key-mismatch')
    expect(await authorize('bob', bob.publicKey)).toBe('authorized')
    expect(await authorize('carol', bob.publicKey)).toBe('not-pinned')
  })

  test('a yes/no callback (the coordinator hook) adapts to the handshake', async () => {
    const seen: string[] = []
    const authorize = authorizeByCallback(async (key, serial) => {
      seen.push(serial)
      return b64(key) === b64(bob.publicKey)
    })
    expect(await authorize('bob', bob.publicKey)).toBe('authorized')
    expect(await authorize('bob', mallory.publicKey)).toBe('not-pinned')
    expect(seen).toEqual(['bob', 'bob'])
  })
})

runPinStoreSuite('0600 pin file', {
  create: () => new FilePinStore(join(dir(), 'pins.json')),
  reopen: (store) => new FilePinStore((store as FilePinStore).path),
  corrupt: (store, serial) => {
    const path = (store as FilePinStore).path
    writeFileSync(path, JSON.stringify({ [serial]: { publicKey: 7 } }), { mode: 0o600 })
  },
})
