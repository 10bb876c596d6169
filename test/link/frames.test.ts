/** Payload layouts: every message round-trips through its documented bytes; payloads that do not fit are refused. */
import { describe, expect, test } from 'bun:test'
import {
  decodeError,
  decodeMessage,
  decodeTensor,
  encodeError,
  encodeMessage,
  encodeTensor,
  FrameType,
  type LinkMessage,
} from '../../src/link/frames.ts'

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

describe('frame payloads', () => {
  test('each message has the documented bytes and decodes back', () => {
    const sha = new Uint8Array(32).fill(0xab)
    const cases: [LinkMessage, string][] = [
      [{ type: 'ping', sentAtMs: 0x0102n }, '0201000000000000'],
      [{ type: 'tokens', ids: new Uint32Array([1, 0x10000]) }, '02000000' + '01000000' + '00000100'],
      [{ type: 'sessionEnd', slot: 7 }, '07000000'],
      [{ type: 'error', error: { code: 'E_X', message: 'é' } }, '0300' + hex(new TextEncoder().encode('E_Xé'))],
      [{ type: 'fileOffer', size: 5n, sha256: sha, name: 'a' }, '0500000000000000' + hex(sha) + '61'],
      [{ type: 'fileChunk', offset: 9n, bytes: new Uint8Array([1, 2]) }, '09000000000000000102'],
      [{ type: 'fileDone', sha256: sha }, hex(sha)],
      [{ type: 'data', bytes: new Uint8Array([3]) }, '03'],
    ]
    for (const [message, expected] of cases) {
      const { type, payload } = encodeMessage(message)
      expect(type).toBe(FrameType[message.type])
      expect(hex(payload)).toBe(expected)
      expect(decodeMessage(type, payload)).toEqual(message)
    }
  })

  test('a tensor is a small binary header and raw little-endian bytes', () => {
    const data = new Uint8Array(new Float32Array([1, -2, 0.5, 3, 4, 5]).buffer)
    const payload = encodeTensor('f32', [2, 3], data)
    expect(hex(payload.subarray(0, 10))).toBe('0002' + '02000000' + '03000000')
    expect(hex(payload.subarray(10))).toBe(hex(data))
    const back = decodeTensor(payload)
    expect(back.shape).toEqual([2, 3])
    expect(Array.from(new Float32Array(back.data.slice().buffer))).toEqual([1, -2, 0.5, 3, 4, 5])
    expect(decodeMessage(FrameType.activation, payload)).toMatchObject({
      type: 'activation',
      tensor: { dtype: 'f32', shape: [2, 3] },
    })
  })

  test('payloads that do not fit their layout are refused', () => {
    expect(() => decodeMessage(FrameType.ping, new Uint8Array(7))).toThrow(/does not fit/)
    expect(() => decodeMessage(FrameType.tokens, new Uint8Array([2, 0, 0, 0, 1, 0, 0, 0]))).toThrow(/does not fit/)
    expect(() => decodeMessage(FrameType.sessionEnd, new Uint8Array(5))).toThrow(/does not fit/)
    expect(() => decodeMessage(FrameType.hello, new Uint8Array(5))).toThrow(/no sealed payload/)
    expect(() => decodeMessage(99, new Uint8Array(5))).toThrow(/no sealed payload/)
    expect(() => decodeTensor(encodeTensor('f32', [2], new Uint8Array(8)).subarray(0, 9))).toThrow(/does not match/)
    expect(() => encodeTensor('f32', [3], new Uint8Array(8))).toThrow(/does not match/)
    expect(decodeError(new Uint8Array([0, 0, 1]))).toBeNull() // no code: e.g. the start of a sealed body
    expect(decodeError(encodeError({ code: 'not a code', message: 'x' }))).toEqual({ code: 'E_UNKNOWN', message: 'x' })
  })
})
