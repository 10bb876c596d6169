/** The software identity: a P-256 key in a 0600 file (Linux, and macOS without the Secure Enclave bridge). */
import { p256 } from '@noble/curves/nist.js'
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js'
import { existsSync } from 'node:fs'
import { TrustError } from './errors.ts'
import type { Identity } from './identity.ts'
import { readPrivateFile, writePrivateFile } from './private-file.ts'

interface KeyFile {
  version: 1
  kind: 'software'
  secretKey: string
}

export function softwareIdentityFromSecret(secret: Uint8Array): Identity {
  return { kind: 'software', publicKey: p256.getPublicKey(secret, true), sign: async (m) => p256.sign(m, secret) }
}

/** Loads the key file, or creates it (0600) when absent. Refuses a file readable by group or others. */
export function loadSoftwareIdentity(
  path: string,
  options: { create?: boolean } = {},
): { identity: Identity; created: boolean } {
  if (!existsSync(path)) {
    if (options.create === false)
      throw new TrustError('E_KEY_MISSING', `no identity key at ${path}`, "run 'dbcluster identity init'")
    const secret = p256.utils.randomSecretKey()
    const file: KeyFile = { version: 1, kind: 'software', secretKey: bytesToHex(secret) }
    writePrivateFile(path, JSON.stringify(file))
    return { identity: softwareIdentityFromSecret(secret), created: true }
  }
  let parsed: KeyFile
  try {
    parsed = JSON.parse(readPrivateFile(path))
  } catch (error) {
    if (error instanceof TrustError) throw error
    throw new TrustError(
      'E_KEY_FILE',
      `${path} is not a dbcluster key file`,
      'move it away and run `dbcluster identity init`',
    )
  }
  if (parsed?.kind !== 'software' || typeof parsed.secretKey !== 'string') {
    throw new TrustError(
      'E_KEY_FILE',
      `${path} is not a dbcluster software key file`,
      'move it away and run `dbcluster identity init`',
    )
  }
  // say what is wrong with the file, not what the curve library thinks of a number
  if (!/^[0-9a-fA-F]{64}$/.test(parsed.secretKey)) {
    throw new TrustError(
      'E_KEY_FILE',
      `${path}: its secretKey must be 64 hexadecimal characters (32 bytes), found ${parsed.secretKey.length} characters${/[^0-9a-fA-F]/.test(parsed.secretKey) ? ' with non-hex ones' : ''}`,
      'restore the file from a backup, or move it away and run `dbcluster identity init` (a new key must be pinned again by its peers)',
    )
  }
  const secret = hexToBytes(parsed.secretKey.toLowerCase())
  if (!p256.utils.isValidSecretKey(secret)) {
    throw new TrustError(
      'E_KEY_FILE',
      `${path}: its secretKey is not a valid P-256 secret (zero, or not below the curve's order)`,
      'restore the file from a backup, or move it away and run `dbcluster identity init` (a new key must be pinned again by its peers)',
    )
  }
  return { identity: softwareIdentityFromSecret(secret), created: false }
}
