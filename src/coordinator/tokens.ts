/** API bearer tokens: random, shown once, stored only as their SHA-256. */
import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex } from '@noble/hashes/utils.js'

const PREFIX = 'dbc_'

/** 32 random bytes, base64url, with a recognisable prefix (so secret scanners and humans can spot one). */
export function generateToken(
  randomBytes: (n: number) => Uint8Array = (n) => crypto.getRandomValues(new Uint8Array(n)),
): string {
  return PREFIX + Buffer.from(randomBytes(32)).toString('base64url')
}

/** The only form a token is stored or compared in. */
export function hashToken(token: string): string {
  return bytesToHex(sha256(new TextEncoder().encode(token)))
}

/** Reads `Authorization: Bearer <token>`; returns undefined for anything else. */
export function bearerToken(header: string | undefined | null): string | undefined {
  if (!header) return undefined
  const m = /^Bearer\s+(\S{1,512})\s*$/i.exec(header)
  return m?.[1]
}
