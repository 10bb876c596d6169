/** The coordinator's own P-256 signing key (it signs rosters): a key file created 0600 on first start, refused when group or others can read it. */
import { p256 } from '@noble/curves/nist.js'
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js'
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import type { Identity } from '../trust/identity.ts'
import { CoordinatorError } from './errors.ts'

interface KeyFile {
  version: 1
  kind: 'coordinator'
  secretKey: string
}

export function signerFromSecret(secret: Uint8Array): Identity {
  return { kind: 'software', publicKey: p256.getPublicKey(secret, true), sign: async (m) => p256.sign(m, secret) }
}

/** Loads the key at `path`, or creates it (0600, folder 0700) when absent. */
export function loadOrCreateSigningKey(path: string): { signer: Identity; created: boolean } {
  if (!existsSync(path)) {
    const secret = p256.utils.randomSecretKey()
    const dir = dirname(path)
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 })
    const tmp = `${path}.tmp-${process.pid}`
    writeFileSync(
      tmp,
      JSON.stringify({ version: 1, kind: 'coordinator', secretKey: bytesToHex(secret) } satisfies KeyFile),
      { mode: 0o600 },
    )
    chmodSync(tmp, 0o600)
    renameSync(tmp, path)
    return { signer: signerFromSecret(secret), created: true }
  }
  const mode = statSync(path).mode & 0o777
  if (mode & 0o077) {
    throw new CoordinatorError(
      'E_KEY_PERMISSIONS',
      `${path} is readable by group or others (mode ${mode.toString(8)})`,
      `run 'chmod 600 ${path}'`,
    )
  }
  let parsed: Partial<KeyFile>
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<KeyFile>
  } catch {
    throw new CoordinatorError(
      'E_KEY_FILE',
      `${path} is not a coordinator key file`,
      'move it away: a new key is created on the next start (rosters it signed stop verifying)',
    )
  }
  if (
    parsed.kind !== 'coordinator' ||
    typeof parsed.secretKey !== 'string' ||
    !/^[0-9a-f]{64}$/.test(parsed.secretKey)
  ) {
    throw new CoordinatorError('E_KEY_FILE', `${path} is not a coordinator key file`)
  }
  return { signer: signerFromSecret(hexToBytes(parsed.secretKey)), created: false }
}
