/** The machine identity seam: one P-256 signing key per machine, held in the Secure Enclave on macOS or in a 0600 file elsewhere. */
import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex } from '@noble/hashes/utils.js'
import { p256 } from '@noble/curves/nist.js'

export type KeyKind = 'secure-enclave' | 'software'

/** What every identity implementation offers: its public key and ECDSA-P256-SHA256 signatures (64-byte compact r‖s). */
export interface Identity {
  readonly kind: KeyKind
  /** SEC1 compressed P-256 public key (33 bytes). */
  readonly publicKey: Uint8Array
  sign(message: Uint8Array): Promise<Uint8Array>
}

/** Verifies a 64-byte compact ECDSA-P256-SHA256 signature (low-S not required: Secure Enclave signatures may be high-S). */
export function verifySignature(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return p256.verify(signature, message, publicKey, { lowS: false })
  } catch {
    return false
  }
}

/** Short, human-comparable fingerprint of a public key: SHA-256 of the compressed key, first 16 bytes as hex pairs. */
export function fingerprint(publicKey: Uint8Array): string {
  const hex = bytesToHex(sha256(publicKey)).slice(0, 32)
  return hex.match(/../g)!.join(':')
}

/** Normalises any SEC1 encoding (compressed or uncompressed) to the 33-byte compressed form; throws on an invalid point. */
export function compressPublicKey(publicKey: Uint8Array): Uint8Array {
  return p256.Point.fromBytes(publicKey).toBytes(true)
}
