/** The Secure Enclave identity (macOS, Apple Silicon). Design (docs/trust.md, design/mlx-c.md §8): a CryptoKit
 * `SecureEnclave.P256.Signing` key whose device-bound `dataRepresentation` blob is saved in a 0600 file — usable by an
 * unsigned CLI, unlike a persistent Keychain SE key, which needs entitlements. The private key never leaves the enclave;
 * the blob only works in the enclave that made it. Calls go through the macOS bridge (macos-bridge.ts). */
import { existsSync } from 'node:fs'
import { TrustError } from './errors.ts'
import { compressPublicKey, verifySignature, type Identity } from './identity.ts'
import { probeMacosBridge, type MacosBridge, type MacosBridgeProbe } from './macos-bridge.ts'
import { readPrivateFile, writePrivateFile } from './private-file.ts'

export type EnclaveProbe = { available: true } | { available: false; reason: string }

export const ENCLAVE_UNAVAILABLE = 'Secure Enclave identity unavailable'

interface EnclaveKeyFile {
  version: 1
  kind: 'secure-enclave'
  /** Base64 of the CryptoKit dataRepresentation: an enclave-bound handle, not the private key. */
  blob: string
}

interface ProbeOptions {
  platform?: NodeJS.Platform
  arch?: string
  bridge?: () => MacosBridgeProbe
}

function enclaveBridge(options: ProbeOptions = {}): { bridge: MacosBridge } | { reason: string } {
  const platform = options.platform ?? process.platform
  const arch = options.arch ?? process.arch
  if (platform !== 'darwin' || arch !== 'arm64')
    return {
      reason: `${ENCLAVE_UNAVAILABLE}: the Secure Enclave exists only on Apple Silicon Macs (this is ${platform} ${arch})`,
    }
  const probe = (options.bridge ?? probeMacosBridge)()
  if (!probe.available) return { reason: `${ENCLAVE_UNAVAILABLE}: ${probe.reason}` }
  // Virtual machines (CI runners included) have no enclave.
  if (!probe.bridge.enclaveAvailable())
    return {
      reason: `${ENCLAVE_UNAVAILABLE}: this Mac reports no Secure Enclave (SecureEnclave.isAvailable is false, as in a virtual machine)`,
    }
  return { bridge: probe.bridge }
}

/** Whether this machine can hold its identity in the Secure Enclave, and why not when it cannot. */
export function probe(options: ProbeOptions = {}): EnclaveProbe {
  const found = enclaveBridge(options)
  return 'bridge' in found ? { available: true } : { available: false, reason: found.reason }
}

function requireBridge(): MacosBridge {
  const found = enclaveBridge()
  if ('reason' in found)
    throw new TrustError(
      'E_ENCLAVE_UNAVAILABLE',
      found.reason,
      'the software identity (a 0600 key file) is used where no enclave key exists yet',
    )
  return found.bridge
}

/** Parses an enclave key file; a damaged one is refused with what to do. */
export function parseEnclaveKeyFile(text: string, path: string): Uint8Array {
  let parsed: Partial<EnclaveKeyFile>
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new TrustError(
      'E_KEY_FILE',
      `${path} is not a dbcluster key file`,
      'move it away, run `dbcluster identity init` and have the coordinator re-pin this machine',
    )
  }
  if (
    parsed?.kind !== 'secure-enclave' ||
    parsed.version !== 1 ||
    typeof parsed.blob !== 'string' ||
    !/^[A-Za-z0-9+/]+={0,2}$/.test(parsed.blob)
  ) {
    throw new TrustError(
      'E_KEY_FILE',
      `${path} is not a dbcluster Secure Enclave key file`,
      'move it away, run `dbcluster identity init` and have the coordinator re-pin this machine',
    )
  }
  return new Uint8Array(Buffer.from(parsed.blob, 'base64'))
}

export const formatEnclaveKeyFile = (blob: Uint8Array): string =>
  JSON.stringify({
    version: 1,
    kind: 'secure-enclave',
    blob: Buffer.from(blob).toString('base64'),
  } satisfies EnclaveKeyFile)

function identityFromBlob(bridge: MacosBridge, blob: Uint8Array, path: string): Identity {
  let x963: Uint8Array
  try {
    x963 = bridge.enclavePublicKey(blob)
  } catch (error) {
    throw new TrustError(
      'E_ENCLAVE_KEY',
      `${path}: ${(error as Error).message}`,
      'a key blob works only on the Mac that made it: move the file away, run `dbcluster identity init` and re-pin this machine',
    )
  }
  return {
    kind: 'secure-enclave',
    publicKey: compressPublicKey(x963),
    sign: async (message) => bridge.enclaveSign(blob, message),
  }
}

/** Creates a key in the enclave, checks one signature, then saves its blob (0600) at `path`. Synchronous, like the
 * software identity's loader, because the bridge calls are. */
export function createEnclaveIdentity(path: string): Identity {
  if (existsSync(path))
    throw new TrustError(
      'E_KEY_EXISTS',
      `${path} already holds a key`,
      'use it (dbcluster identity show), or move it away first',
    )
  const bridge = requireBridge()
  const blob = bridge.createEnclaveKey()
  const identity = identityFromBlob(bridge, blob, path)
  const probeMessage = new TextEncoder().encode('dbcluster secure enclave self-check')
  if (!verifySignature(identity.publicKey, probeMessage, bridge.enclaveSign(blob, probeMessage))) {
    throw new TrustError(
      'E_ENCLAVE_KEY',
      'the new Secure Enclave key signs, but its signature does not verify',
      'report this with your macOS version; the software identity still works',
    )
  }
  writePrivateFile(path, formatEnclaveKeyFile(blob))
  return identity
}

/** Opens the enclave key whose blob is saved at `path`. */
export function open(path: string): Identity {
  const bridge = requireBridge()
  if (!existsSync(path))
    throw new TrustError('E_KEY_MISSING', `no Secure Enclave key at ${path}`, "run 'dbcluster identity init'")
  return identityFromBlob(bridge, parseEnclaveKeyFile(readPrivateFile(path), path), path)
}

/** Former name of open(), kept for callers. */
export const openEnclaveIdentity = open
