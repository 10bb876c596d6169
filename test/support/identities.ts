/** Fixed test identities (software P-256 keys from a seed) and a pin map authorizer. */
import { p256 } from '@noble/curves/nist.js'
import { equalBytes } from '@noble/ciphers/utils.js'
import type { Authorization } from '../../src/trust/handshake.ts'
import type { Identity } from '../../src/trust/identity.ts'

export function testIdentity(seed: number): Identity {
  const secret = new Uint8Array(32).fill(seed)
  return { kind: 'software', publicKey: p256.getPublicKey(secret, true), sign: async (m) => p256.sign(m, secret) }
}

export function pins(entries: Record<string, Identity>): (serial: string, key: Uint8Array) => Authorization {
  return (serial, key) => {
    const pinned = entries[serial]
    if (!pinned) return 'not-pinned'
    return equalBytes(pinned.publicKey, key) ? 'authorized' : 'key-mismatch'
  }
}

/** Deterministic randomness for reproducible transcripts. */
export function counterRandom(start: number): (n: number) => Uint8Array {
  let c = start
  return (n) => new Uint8Array(n).map(() => (c = (c * 1103515245 + 12345) & 0xff))
}
