/** AEAD: known-answer vectors, our native path byte-identical to @noble/ciphers, tampering refused, and the channel's
 * ordering rules (replay, reorder) and rekeying. */
import { describe, expect, test } from 'bun:test'
import { gcm } from '@noble/ciphers/aes.js'
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { bytesToHex, hexToBytes, randomBytes } from '@noble/hashes/utils.js'
import vectors from '../vectors/aead.json' with { type: 'json' }
import { AeadReceiver, AeadSender, open, seal, type CipherName } from '../../src/link/aead-channel.ts'
import { FrameType } from '../../src/link/frames.ts'

const noble = (cipher: CipherName, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array) =>
  cipher === 'aes-256-gcm' ? gcm(key, nonce, aad) : chacha20poly1305(key, nonce, aad)

describe('known answers', () => {
  for (const [cipher, list] of Object.entries(vectors) as [CipherName, (typeof vectors)['aes-256-gcm']][])
    for (const v of list)
      test(`${cipher}: ${v.source}`, () => {
        const pt =
          'plaintext_utf8' in v
            ? new TextEncoder().encode((v as { plaintext_utf8: string }).plaintext_utf8)
            : hexToBytes(v.plaintext)
        const expected = v.ciphertext + v.tag
        const [key, nonce, aad] = [hexToBytes(v.key), hexToBytes(v.nonce), hexToBytes(v.aad)]
        expect(bytesToHex(seal(cipher, key, nonce, aad, pt))).toBe(expected)
        expect(bytesToHex(noble(cipher, key, nonce, aad).encrypt(pt))).toBe(expected)
        expect(bytesToHex(open(cipher, key, nonce, aad, hexToBytes(expected)))).toBe(bytesToHex(pt))
      })
})

describe('native == @noble on the same inputs', () => {
  for (const cipher of ['aes-256-gcm', 'chacha20-poly1305'] as const)
    test(`${cipher}: random sizes, and views at odd offsets as sliced from a socket`, () => {
      for (const size of [0, 1, 15, 16, 17, 4096, 60_001]) {
        const key = randomBytes(32)
        const nonce = randomBytes(12)
        const backing = randomBytes(size + 3)
        const pt = backing.subarray(1, 1 + size) // offset 1, not aligned
        const aad = randomBytes(41).subarray(3)
        const ours = seal(cipher, key, nonce, aad, pt)
        expect(bytesToHex(ours)).toBe(bytesToHex(noble(cipher, key, nonce, aad).encrypt(pt.slice())))
        const sealedView = new Uint8Array(ours.byteLength + 5)
        sealedView.set(ours, 5)
        expect(bytesToHex(open(cipher, key, nonce, aad, sealedView.subarray(5)))).toBe(bytesToHex(pt))
      }
    })
})

describe('tampering', () => {
  for (const cipher of ['aes-256-gcm', 'chacha20-poly1305'] as const)
    test(`${cipher}: a flipped bit in ciphertext, tag or AAD is refused`, () => {
      const key = randomBytes(32)
      const nonce = randomBytes(12)
      const aad = new TextEncoder().encode('cluster c1, stage 1')
      const sealed = seal(cipher, key, nonce, aad, new TextEncoder().encode('activation bytes'))
      for (const at of [0, 7, sealed.length - 16, sealed.length - 1]) {
        const bad = sealed.slice()
        bad[at]! ^= 0x10
        expect(() => open(cipher, key, nonce, aad, bad)).toThrow()
      }
      const badAad = aad.slice()
      badAad[3]! ^= 1
      expect(() => open(cipher, key, nonce, badAad, sealed)).toThrow()
    })
})

describe('channel', () => {
  const setup = (cipher: CipherName = 'aes-256-gcm', rekeyInterval?: bigint) => {
    const key = randomBytes(32)
    return {
      tx: new AeadSender({ cipher, key, direction: 1, clusterId: 'c1', rekeyInterval }),
      rx: new AeadReceiver({ cipher, key, direction: 1, clusterId: 'c1', rekeyInterval }),
    }
  }
  const msg = (s: string) => new TextEncoder().encode(s)

  test('frames open in order; a replayed or reordered frame is refused', () => {
    const { tx, rx } = setup()
    const f0 = tx.seal({ type: FrameType.data, stage: 1, requestId: 5n }, msg('a'))
    const f1 = tx.seal({ type: FrameType.data, stage: 1, requestId: 5n }, msg('b'))
    const f2 = tx.seal({ type: FrameType.data, stage: 1, requestId: 5n }, msg('c'))
    expect(new TextDecoder().decode(rx.open(FrameType.data, f0).plaintext)).toBe('a')
    expect(() => rx.open(FrameType.data, f2)).toThrow(/out of order/)
    const { tx: tx2, rx: rx2 } = setup()
    const g0 = tx2.seal({ type: FrameType.data, stage: 0, requestId: 0n }, msg('x'))
    rx2.open(FrameType.data, g0)
    expect(() => rx2.open(FrameType.data, g0)).toThrow(/replayed/)
    expect(f1.byteLength).toBeGreaterThan(0)
  })

  test('the AAD binds frame type, stage and request id', () => {
    for (const mutate of [
      (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).setUint32(8, 2, true), // stage
      (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).setBigUint64(12, 6n, true), // request id
    ]) {
      const { tx, rx } = setup()
      const body = tx.seal({ type: FrameType.activation, stage: 1, requestId: 5n }, msg('h'))
      mutate(body)
      expect(() => rx.open(FrameType.activation, body)).toThrow(/failed authentication/)
    }
    const { tx, rx } = setup()
    const body = tx.seal({ type: FrameType.activation, stage: 1, requestId: 5n }, msg('h'))
    expect(() => rx.open(FrameType.tokens, body)).toThrow(/failed authentication/)
  })

  test('both sides rekey at the same boundary; a receiver that did not would fail', () => {
    const { tx, rx } = setup('chacha20-poly1305', 4n)
    for (let i = 0; i < 13; i++) {
      expect(
        new TextDecoder().decode(
          rx.open(FrameType.data, tx.seal({ type: FrameType.data, stage: 0, requestId: 0n }, msg(`m${i}`))).plaintext,
        ),
      ).toBe(`m${i}`)
    }
    const key = randomBytes(32)
    const tx2 = new AeadSender({ cipher: 'aes-256-gcm', key, direction: 1, clusterId: 'c1', rekeyInterval: 2n })
    const rx2 = new AeadReceiver({ cipher: 'aes-256-gcm', key, direction: 1, clusterId: 'c1' })
    rx2.open(FrameType.data, tx2.seal({ type: FrameType.data, stage: 0, requestId: 0n }, msg('0')))
    rx2.open(FrameType.data, tx2.seal({ type: FrameType.data, stage: 0, requestId: 0n }, msg('1')))
    expect(() =>
      rx2.open(FrameType.data, tx2.seal({ type: FrameType.data, stage: 0, requestId: 0n }, msg('2'))),
    ).toThrow(/failed authentication/)
  })
})

describe('wire layout (docs/protocol.md §Sealed frames), rebuilt by hand', () => {
  for (const cipher of ['aes-256-gcm', 'chacha20-poly1305'] as const)
    test(`${cipher}: a sealed frame is @noble's output under the documented nonce and AAD`, () => {
      const key = randomBytes(32)
      const tx = new AeadSender({ cipher, key, direction: 2, clusterId: 'cl-1' })
      tx.sealFrame({ type: FrameType.data, stage: 0, requestId: 0n }, msgBytes('skip'))
      const plaintext = randomBytes(77).subarray(3) // an odd-offset view
      const frame = tx.sealFrame({ type: FrameType.activation, stage: 3, requestId: 0x0102030405n }, plaintext)
      // u64 LE length | u8 type | u64 LE seq | u32 LE stage | u64 LE request id | ciphertext ‖ tag
      expect(frame.length).toBe(9 + 20 + plaintext.length + 16)
      expect(bytesToHex(frame.subarray(0, 29))).toBe(
        bytesToHex(le64(1 + 20 + plaintext.length + 16)) +
          hexOf([FrameType.activation]) +
          '0100000000000000' +
          '03000000' +
          '0504030201000000',
      )
      // nonce = u32 BE direction ‖ u64 BE counter; AAD = u8 type | u64 LE seq | u32 LE stage | u64 LE request id | cluster id
      const nonce = hexToBytes('00000002' + '0000000000000001')
      const aad = hexToBytes(
        hexOf([FrameType.activation]) +
          '0100000000000000' +
          '03000000' +
          '0504030201000000' +
          bytesToHex(msgBytes('cl-1')),
      )
      expect(bytesToHex(frame.subarray(29))).toBe(bytesToHex(noble(cipher, key, nonce, aad).encrypt(plaintext.slice())))
    })
})

const msgBytes = (s: string) => new TextEncoder().encode(s)
const hexOf = (bytes: number[]) => bytesToHex(new Uint8Array(bytes))
const le64 = (n: number) => {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true)
  return b
}
