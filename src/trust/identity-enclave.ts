/** The Secure Enclave identity (macOS, Apple Silicon). Design (docs/trust.md): a CryptoKit `SecureEnclave.P256.Signing`
 * key whose device-bound `dataRepresentation` is saved in a 0600 file — usable by an unsigned CLI, unlike a persistent
 * Keychain SE key, which needs entitlements. It needs the Swift bridge in the shim (issue 9); until that is built it
 * reports honestly that it is unavailable, and the software identity is used. */
export type EnclaveProbe = { available: true } | { available: false; reason: string }
import { TrustError } from './errors.ts'
import type { Identity } from './identity.ts'

export function probe(): EnclaveProbe {
  if (process.platform !== 'darwin' || process.arch !== 'arm64') return { available: false, reason: 'the Secure Enclave exists only on Apple Silicon Macs' }
  return { available: false, reason: 'this build has no Secure Enclave bridge (ffi/secure_enclave.m is not compiled in yet)' }
}

export function openEnclaveIdentity(): Identity {
  const p = probe()
  throw new TrustError('E_ENCLAVE_UNAVAILABLE', `Secure Enclave identity unavailable: ${p.available ? '' : p.reason}`, 'the software identity (0600 key file) is used instead')
}
