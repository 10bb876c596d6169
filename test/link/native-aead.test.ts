/** The shim's AEAD (ffi/aead.c through libcrypto) against independent implementations: @noble/ciphers for
 * ChaCha20-Poly1305 and node:crypto for AES-256-GCM, on the RFC 8439 §2.8.2 vector and random inputs (with and without
 * AAD, at unaligned offsets), and every altered tag, AAD or ciphertext refused. Where libcrypto is missing here the
 * tests say so and check that the link falls back to @noble. */
import { describe, expect, test } from 'bun:test'
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js'
import { createCipheriv, randomBytes as nodeRandom } from 'node:crypto'
import vectors from '../vectors/aead.json' with { type: 'json' }
import { aeadImplementation, open, seal } from '../../src/link/aead-channel.ts'
import { nativeAead, type NativeCipher } from '../../src/link/native-aead.ts'

const native = nativeAead()
/** node:crypto's, which has no 64 KiB limit (@noble's randomBytes has, as WebCrypto does). */
const randomBytes = (n: number) => new Uint8Array(nodeRandom(n))
const SIZES = [0, 1, 15, 16, 17, 4096, 262144]

/** The reference for each cipher: an implementation that shares no code with libcrypto's EVP path. */
function reference(cipher: NativeCipher, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, pt: Uint8Array) {
  if (cipher === 'chacha20-poly1305') return chacha20poly1305(key, nonce, aad).encrypt(pt)
  const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 })
  c.setAAD(aad)
  return new Uint8Array(Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]))
}

const flipped = (b: Uint8Array, at: number) => {
  const c = b.slice()
  c[at]! ^= 0x01
  return c
}

describe.skipIf(!native)('native AEAD (libcrypto through the shim)', () => {
  test('RFC 8439 §2.8.2: the sunscreen AEAD vector seals and opens byte for byte, as @noble does', () => {
    const v = vectors['chacha20-poly1305'][0]!
    const [key, nonce, aad] = [hexToBytes(v.key), hexToBytes(v.nonce), hexToBytes(v.aad)]
    const pt = new TextEncoder().encode(v.plaintext_utf8)
    const out = new Uint8Array(pt.byteLength + 16)
    native!.seal('chacha20-poly1305', key, nonce, aad, pt, out, 0)
    expect(bytesToHex(out)).toBe(v.ciphertext + v.tag)
    expect(bytesToHex(chacha20poly1305(key, nonce, aad).encrypt(pt))).toBe(v.ciphertext + v.tag)
    expect(new TextDecoder().decode(native!.open('chacha20-poly1305', key, nonce, aad, out))).toBe(v.plaintext_utf8)
  })

  for (const cipher of ['chacha20-poly1305', 'aes-256-gcm'] as const)
    test(`${cipher}: native == reference on random inputs of ${SIZES.join(', ')} bytes, with and without AAD`, () => {
      expect(native!.has(cipher)).toBe(true)
      for (const size of SIZES)
        for (const aadBytes of [0, 13]) {
          const key = randomBytes(32)
          const nonce = randomBytes(12)
          const pt = randomBytes(size + 1).subarray(1) // offset 1, as sliced from a socket's buffer
          const aad = randomBytes(aadBytes + 3).subarray(3)
          const expected = reference(cipher, key, nonce, aad, pt)
          // sealed into the middle of a larger buffer, as the link writes a frame
          const frame = new Uint8Array(29 + size + 16 + 5)
          native!.seal(cipher, key, nonce, aad, pt, frame, 29)
          expect(bytesToHex(frame.subarray(29, 29 + size + 16))).toBe(bytesToHex(expected))
          expect(
            frame.subarray(0, 29).every((b) => b === 0) && frame.subarray(29 + size + 16).every((b) => b === 0),
          ).toBe(true)
          expect(bytesToHex(native!.open(cipher, key, nonce, aad, expected))).toBe(bytesToHex(pt))
        }
    })

  for (const cipher of ['chacha20-poly1305', 'aes-256-gcm'] as const)
    test(`${cipher}: an altered tag, AAD, ciphertext, nonce or key is refused`, () => {
      const key = randomBytes(32)
      const nonce = randomBytes(12)
      const aad = randomBytes(21)
      const pt = randomBytes(4096)
      const sealed = reference(cipher, key, nonce, aad, pt)
      const refused = (k: Uint8Array, n: Uint8Array, a: Uint8Array, s: Uint8Array) =>
        expect(() => native!.open(cipher, k, n, a, s)).toThrow('invalid tag')
      refused(key, nonce, aad, flipped(sealed, sealed.byteLength - 1)) // tag
      refused(key, nonce, aad, flipped(sealed, 0)) // ciphertext
      refused(key, nonce, aad, flipped(sealed, 2048))
      refused(key, nonce, flipped(aad, 7), sealed) // AAD
      refused(key, nonce, new Uint8Array(0), sealed) // AAD dropped
      refused(key, flipped(nonce, 11), aad, sealed)
      refused(flipped(key, 0), nonce, aad, sealed)
      refused(key, nonce, aad, sealed.subarray(0, sealed.byteLength - 1)) // truncated
      expect(() => native!.open(cipher, key, nonce, aad, sealed.subarray(0, 15))).toThrow()
      // an empty message still carries a tag that must verify
      const empty = reference(cipher, key, nonce, aad, new Uint8Array(0))
      expect(native!.open(cipher, key, nonce, aad, empty).byteLength).toBe(0)
      refused(key, nonce, aad, flipped(empty, 3))
    })

  test('keys and nonces of the wrong size are refused before the C side reads them', () => {
    const out = new Uint8Array(32)
    expect(() =>
      native!.seal('chacha20-poly1305', randomBytes(16), randomBytes(12), new Uint8Array(0), randomBytes(16), out, 0),
    ).toThrow(RangeError)
    expect(() => native!.open('chacha20-poly1305', randomBytes(32), randomBytes(8), new Uint8Array(0), out)).toThrow(
      RangeError,
    )
    expect(() =>
      native!.seal('chacha20-poly1305', randomBytes(32), randomBytes(12), new Uint8Array(0), randomBytes(17), out, 0),
    ).toThrow(RangeError)
  })

  test("the link's chacha20-poly1305 seals through it, and opens what @noble sealed", () => {
    expect(aeadImplementation('chacha20-poly1305')).toBe('native, libcrypto through the shim')
    const key = randomBytes(32)
    const nonce = randomBytes(12)
    const aad = randomBytes(30)
    const pt = randomBytes(262144)
    const fromNoble = chacha20poly1305(key, nonce, aad).encrypt(pt)
    expect(bytesToHex(seal('chacha20-poly1305', key, nonce, aad, pt))).toBe(bytesToHex(fromNoble))
    expect(bytesToHex(open('chacha20-poly1305', key, nonce, aad, fromNoble))).toBe(bytesToHex(pt))
    expect(() => open('chacha20-poly1305', key, nonce, aad, flipped(fromNoble, 5))).toThrow()
  })
})

test.skipIf(native !== null)('without the shim or libcrypto, the link seals ChaCha20-Poly1305 with @noble', () => {
  expect(aeadImplementation('chacha20-poly1305')).toBe('JavaScript, @noble/ciphers')
})

test('a process whose shim does not load seals ChaCha20-Poly1305 with @noble, to the same RFC 8439 bytes', async () => {
  const v = vectors['chacha20-poly1305'][0]!
  const script = `
    import { aeadImplementation, seal } from './src/link/aead-channel.ts'
    const hex = (s) => Uint8Array.from(Buffer.from(s, 'hex'))
    const sealed = seal('chacha20-poly1305', hex('${v.key}'), hex('${v.nonce}'), hex('${v.aad}'), new TextEncoder().encode(${JSON.stringify(v.plaintext_utf8)}))
    console.log(aeadImplementation('chacha20-poly1305') + ' ' + Buffer.from(sealed).toString('hex'))`
  const proc = Bun.spawn([process.execPath, '-e', script], {
    cwd: new URL('../..', import.meta.url).pathname,
    env: { ...process.env, DBCLUSTER_SHIM: '/nonexistent/libdbc.so' },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
  expect(code).toBe(0)
  expect(out.trim()).toBe(`JavaScript, @noble/ciphers ${v.ciphertext}${v.tag}`)
})
