/** The coordinator's key file: created 0600 on first start, the same key on the next, refused when others can read it. */
import { expect, test } from 'bun:test'
import { chmodSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadOrCreateSigningKey } from '../../src/coordinator/signing-key.ts'
import { verifySignature } from '../../src/trust/identity.ts'
import { tempDir } from './support.ts'

test('created 0600 in a new 0700 folder, loaded unchanged, signs verifiably', async () => {
  const path = join(tempDir(), 'sub', 'coordinator.key')
  const first = loadOrCreateSigningKey(path)
  expect(first.created).toBe(true)
  expect(statSync(path).mode & 0o777).toBe(0o600)
  expect(statSync(join(path, '..')).mode & 0o777).toBe(0o700)
  const again = loadOrCreateSigningKey(path)
  expect(again.created).toBe(false)
  expect(again.signer.publicKey).toEqual(first.signer.publicKey)
  const message = new TextEncoder().encode('roster')
  expect(verifySignature(first.signer.publicKey, message, await again.signer.sign(message))).toBe(true)
})

test('a group- or world-readable key file is refused with the fix in the hint', () => {
  const path = join(tempDir(), 'coordinator.key')
  loadOrCreateSigningKey(path)
  chmodSync(path, 0o644)
  expect(() => loadOrCreateSigningKey(path)).toThrow(
    expect.objectContaining({ code: 'E_KEY_PERMISSIONS', hint: `run 'chmod 600 ${path}'` }),
  )
})

test('a file that is not a coordinator key is refused', () => {
  const path = join(tempDir(), 'coordinator.key')
  writeFileSync(path, '{"kind":"software","secretKey":"00"}', { mode: 0o600 })
  expect(() => loadOrCreateSigningKey(path)).toThrow(expect.objectContaining({ code: 'E_KEY_FILE' }))
})
