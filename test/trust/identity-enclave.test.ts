/** The Secure Enclave identity: key-file format and the choice of key run on any OS; the enclave round trip runs on a Mac
 * with an enclave and the bridge built, and reports skipped with the reason elsewhere (CI's macOS VMs have no enclave). */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { signAttestation, verifyAttestation } from '../../src/trust/attestation.ts'
import {
  createEnclaveIdentity,
  formatEnclaveKeyFile,
  open as openEnclave,
  parseEnclaveKeyFile,
  probe,
} from '../../src/trust/identity-enclave.ts'
import { verifySignature } from '../../src/trust/identity.ts'
import { chooseIdentity, enclaveKeyFileFor, loadLocalIdentity } from '../../src/trust/local-identity.ts'

const dir = () => mkdtempSync(join(tmpdir(), 'dbc-enclave-'))

describe('key file', () => {
  test('the blob round-trips through its 0600 JSON file format', () => {
    const blob = new Uint8Array([0, 1, 2, 250, 251, 252, 253, 254, 255])
    expect(parseEnclaveKeyFile(formatEnclaveKeyFile(blob), 'f')).toEqual(blob)
    expect(JSON.parse(formatEnclaveKeyFile(blob))).toEqual({ version: 1, kind: 'secure-enclave', blob: 'AAEC+vv8/f7/' })
  })

  test('anything else is refused with E_KEY_FILE and what to do', () => {
    for (const text of [
      'not json',
      '{"version":1,"kind":"software","secretKey":"00"}',
      '{"version":1,"kind":"secure-enclave","blob":"%%%"}',
      '{"version":2,"kind":"secure-enclave","blob":"AA=="}',
      'null',
    ]) {
      expect(() => parseEnclaveKeyFile(text, '/x/identity.enclave')).toThrow(
        expect.objectContaining({ code: 'E_KEY_FILE', hint: expect.stringContaining('re-pin') }),
      )
    }
  })

  test('the enclave key file sits beside the software key file', () => {
    expect(enclaveKeyFileFor('/home/a/.dbcluster/identity.key')).toBe('/home/a/.dbcluster/identity.enclave')
    expect(enclaveKeyFileFor('/tmp/k')).toBe('/tmp/k.enclave')
  })
})

describe('which key a machine uses', () => {
  const yes = { available: true as const }
  const no = { available: false as const, reason: 'no enclave here' }
  const base = {
    enclaveKeyFile: '/h/identity.enclave',
    enclaveKeyExists: false,
    softwareKeyExists: false,
    create: true,
  }
  test('a new machine gets an enclave key where it can, a software key where it cannot', () => {
    expect(chooseIdentity({ ...base, enclave: yes })).toEqual({ use: 'enclave', create: true })
    expect(chooseIdentity({ ...base, enclave: no })).toEqual({ use: 'software' })
    expect(chooseIdentity({ ...base, enclave: yes, create: false })).toMatchObject({
      use: 'refuse',
      code: 'E_KEY_MISSING',
      hint: "run 'dbcluster identity init'",
    })
  })
  test('existing keys are kept: an enclave key is opened, a software key stays (changing kinds needs a re-pin)', () => {
    expect(chooseIdentity({ ...base, enclave: yes, enclaveKeyExists: true })).toEqual({ use: 'enclave', create: false })
    expect(chooseIdentity({ ...base, enclave: yes, softwareKeyExists: true })).toEqual({ use: 'software' })
    expect(chooseIdentity({ ...base, enclave: yes, enclaveKeyExists: true, softwareKeyExists: true })).toEqual({
      use: 'enclave',
      create: false,
    })
  })
  test('an enclave key that cannot be reached is refused, never silently replaced by a new software key', () => {
    expect(chooseIdentity({ ...base, enclave: no, enclaveKeyExists: true, softwareKeyExists: true })).toEqual({
      use: 'refuse',
      code: 'E_ENCLAVE_UNAVAILABLE',
      message: "this machine's identity is the Secure Enclave key in /h/identity.enclave, but no enclave here",
      hint: "build the bridge ('bash scripts/build-macos-bridge.sh'), or move /h/identity.enclave away to use a software key (the coordinator must then re-pin this machine)",
    })
  })
})

const enclave = probe()
describe('on this machine', () => {
  test.skipIf(enclave.available)(
    `without an enclave, an enclave key file is refused and a new machine gets a software key${enclave.available ? ' (skipped: this machine has an enclave)' : ''}`,
    () => {
      const home = dir()
      const keyFile = join(home, 'identity.key')
      writeFileSync(join(home, 'identity.enclave'), formatEnclaveKeyFile(new Uint8Array([1, 2, 3])), { mode: 0o600 })
      expect(() => loadLocalIdentity(keyFile)).toThrow(expect.objectContaining({ code: 'E_ENCLAVE_UNAVAILABLE' }))
      const fresh = join(dir(), 'identity.key')
      const loaded = loadLocalIdentity(fresh)
      expect(loaded).toMatchObject({ created: true, keyFile: fresh })
      expect(loaded.identity.kind).toBe('software')
    },
  )

  test.skipIf(!enclave.available)(
    `Secure Enclave: create, reopen from the blob, sign and verify, attest${enclave.available ? '' : ` (skipped: ${enclave.reason})`}`,
    async () => {
      const home = dir()
      const path = join(home, 'identity.enclave')
      const created = createEnclaveIdentity(path)
      expect(created.kind).toBe('secure-enclave')
      expect(created.publicKey.length).toBe(33)
      expect(statSync(path).mode & 0o777).toBe(0o600)
      expect(() => createEnclaveIdentity(path)).toThrow(expect.objectContaining({ code: 'E_KEY_EXISTS' }))
      const reopened = openEnclave(path)
      expect(reopened.publicKey).toEqual(created.publicKey)
      const message = new TextEncoder().encode('transcript bytes')
      const signature = await reopened.sign(message)
      expect(signature.length).toBe(64)
      expect(verifySignature(created.publicKey, message, signature)).toBe(true)
      expect(verifySignature(created.publicKey, new TextEncoder().encode('other bytes'), signature)).toBe(false)
      const attestation = await signAttestation(reopened, {
        serial: 's',
        hostname: 'h',
        chip: 'Apple M4 Pro',
        memoryBytes: 1,
        osVersion: 'macOS 26.2',
        binaryHash: 'ab',
        rdmaEnabled: false,
      })
      expect(verifyAttestation(attestation)).toMatchObject({ ok: true })
      // A damaged blob does not open in the enclave, and says what to do.
      writeFileSync(path, formatEnclaveKeyFile(new Uint8Array(64).fill(7)))
      expect(() => openEnclave(path)).toThrow(
        expect.objectContaining({ code: 'E_ENCLAVE_KEY', hint: expect.stringContaining('re-pin') }),
      )
      // A new machine's default identity is an enclave key.
      const local = loadLocalIdentity(join(dir(), 'identity.key'))
      expect(local.identity.kind).toBe('secure-enclave')
      expect(local.keyFile).toEndWith('identity.enclave')
    },
  )
})
