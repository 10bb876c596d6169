/** The frame decoder under every chunking, with the read buffer reused between calls as a socket may do. */
import { expect, test } from 'bun:test'
import { encodeFrame, FrameDecoder } from '../../src/link/framing.ts'

test('frames survive any chunk size and a reused read buffer', () => {
  const frames = [
    encodeFrame(13, new Uint8Array(5).fill(1)),
    encodeFrame(7, new Uint8Array(100_000).fill(2)),
    encodeFrame(13, new Uint8Array(3).fill(3)),
    encodeFrame(8, new Uint8Array(2).fill(4)),
  ]
  const all = new Uint8Array(frames.reduce((a, f) => a + f.length, 0))
  let o = 0
  for (const f of frames) (all.set(f, o), (o += f.length))
  for (const size of [1, 3, 7, 8, 9, 100, 4096, 65_536, all.length]) {
    const decoder = new FrameDecoder(1 << 20)
    const shared = new Uint8Array(size)
    const got: string[] = []
    for (let i = 0; i < all.length; i += size) {
      const n = Math.min(size, all.length - i)
      shared.set(all.subarray(i, i + n))
      for (const f of decoder.push(shared.subarray(0, n)))
        got.push(`${f.type}:${f.body.length}:${f.body[0]}:${f.body[f.body.length - 1]}`)
      shared.fill(0xee) // the "socket" overwrites its buffer after the call
    }
    expect(got).toEqual(['13:5:1:1', '7:100000:2:2', '13:3:3:3', '8:2:4:4'])
  }
})

test('an empty frame, an unknown type and an oversized length are refused', () => {
  expect(() => new FrameDecoder(100).push(new Uint8Array(9))).toThrow(/zero length/)
  expect(() => new FrameDecoder(100).push(encodeFrame(99, new Uint8Array(1)))).toThrow(/unknown frame type 99/)
  expect(() => new FrameDecoder(100).push(encodeFrame(13, new Uint8Array(101)))).toThrow(/limit is 100/)
})

test('good frames ahead of a bad one in the same chunk are returned; the error is kept and thrown next', () => {
  const decoder = new FrameDecoder(100)
  const good = encodeFrame(13, new Uint8Array([5]))
  const chunk = new Uint8Array([...good, ...encodeFrame(99, new Uint8Array(1))])
  const frames = decoder.push(chunk)
  expect(frames.map((f) => [f.type, f.body[0]])).toEqual([[13, 5]])
  expect(decoder.error?.code).toBe('E_FRAME_TYPE')
  expect(() => decoder.push(good)).toThrow(/unknown frame type 99/)
})

test('an unknown type is refused as soon as its byte arrives, before the body is buffered', () => {
  const decoder = new FrameDecoder(1 << 20)
  const frame = encodeFrame(99, new Uint8Array(1 << 19))
  expect(() => decoder.push(frame.subarray(0, 9))).toThrow(/unknown frame type 99/)
  expect(decoder.largestAllocation).toBe(0)
  expect(decoder.buffered).toBe(0)
})

test('a split frame is copied once into a buffer of exactly its size', () => {
  const decoder = new FrameDecoder(1 << 20)
  const frame = encodeFrame(
    7,
    new Uint8Array(1000).map((_, i) => i),
  )
  expect(decoder.push(frame.subarray(0, 3))).toEqual([])
  expect(decoder.push(frame.subarray(3, 500))).toEqual([])
  expect(decoder.buffered).toBe(500 - 8)
  const [f] = decoder.push(frame.subarray(500))
  expect(f!.body).toEqual(new Uint8Array(1000).map((_, i) => i))
  expect(decoder.largestAllocation).toBe(1001)
})
