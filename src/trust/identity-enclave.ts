/** The Secure Enclave identity (macOS, Apple Silicon). Design (docs/trust.md): a CryptoKit `SecureEnclave.P256.Signing`
 * key whose device-bound `dataRepresentation` blob is saved in a 0600 file — usable by an unsigned CLI, unlike a
 * persistent Keychain SE key, which needs entitlements (design/mlx-c.md §8). It needs the bridge in the C shim
 * (issue 9); until that is built, probe() says so honestly and open() refuses, so the software identity is used. */
import { TrustError } from './errors.ts'
import type { Identity } from './identity.ts'

export type EnclaveProbe = { available: true } | { available: false; reason: string }

export const ENCLAVE_UNAVAILABLE = 'Secure Enclave identity needs the macOS bridge (not built on this platform)'

export function probe(): EnclaveProbe {
  if (process.platform !== 'darwin' || process.arch !== 'arm64') return { available: false, reason: `${ENCLAVE_UNAVAILABLE}; the Secure Enclave exists only on Apple Silicon Macs` }
  return { available: false, reason: `${ENCLAVE_UNAVAILABLE}; this build has no ffi/secure_enclave.m compiled in` }
}

/** Opens the enclave key (blob file path given); throws E_ENCLAVE_UNAVAILABLE until the bridge exists. */
export function open(_blobFile?: string): Identity {
  const p = probe()
  throw new TrustError('E_ENCLAVE_UNAVAILABLE', p.available ? ENCLAVE_UNAVAILABLE : p.reason, 'the software identity (a 0600 key file) is used instead')
}

/** Former name of open(), kept for callers. */
export const openEnclaveIdentity = open
