/** Frame types of the link, in one place, with their payload layouts (docs/protocol.md §Frames).
 * Wire: u64 LE length of what follows | u8 type | body. Handshake frames carry their message as the body; every later
 * frame is sealed: body = u64 LE seq | u32 LE stage | u64 LE request id | AEAD ciphertext ‖ 16-byte tag. */
export const FrameType = {
  hello: 1,
  ack: 2,
  finish: 3,
  ping: 4,
  pong: 5,
  /** cluster/step-messages: a step's composition (rows, positions, sampling, admissions, evictions) */
  step: 6,
  /** a tensor payload (see encodeTensor) travelling with a step */
  activation: 7,
  /** sampled token ids returned by the last stage */
  tokens: 8,
  /** a request ended: free its KV slot (u32 slot) */
  sessionEnd: 9,
  /** a UTF-8 error message from the peer before it closes */
  error: 10,
  /** model distribution: offer / chunk / done of a file */
  fileOffer: 11,
  fileChunk: 12,
  /** opaque application bytes (benchmarks, tests, rdma-ping over the link) */
  data: 13,
} as const

export type FrameTypeName = keyof typeof FrameType
export type FrameTypeCode = (typeof FrameType)[FrameTypeName]

const NAMES = new Map<number, FrameTypeName>(Object.entries(FrameType).map(([k, v]) => [v, k as FrameTypeName]))
export const frameTypeName = (code: number): FrameTypeName | undefined => NAMES.get(code)
export const isHandshakeFrame = (code: number) => code === FrameType.hello || code === FrameType.ack || code === FrameType.finish

/** Length prefix (8) + type (1). */
export const FRAME_HEADER_BYTES = 9
/** seq (8) + stage (4) + request id (8) in front of every sealed body. */
export const SEALED_HEADER_BYTES = 20
export const TAG_BYTES = 16

// ---- tensor payloads: dtype u8 | ndim u8 | shape u32 LE × ndim | raw little-endian bytes (never JSON) ----

export const TENSOR_DTYPES = ['f32', 'f16', 'bf16', 'u32', 'i32', 'u8'] as const
export type TensorDtype = (typeof TENSOR_DTYPES)[number]
const ELEMENT_BYTES: Record<TensorDtype, number> = { f32: 4, f16: 2, bf16: 2, u32: 4, i32: 4, u8: 1 }

export function encodeTensor(dtype: TensorDtype, shape: readonly number[], data: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + 4 * shape.length + data.byteLength)
  const view = new DataView(out.buffer)
  out[0] = TENSOR_DTYPES.indexOf(dtype)
  out[1] = shape.length
  shape.forEach((d, i) => view.setUint32(2 + 4 * i, d, true))
  out.set(data, 2 + 4 * shape.length)
  return out
}

export function decodeTensor(payload: Uint8Array): { dtype: TensorDtype; shape: number[]; data: Uint8Array } {
  if (payload.byteLength < 2) throw new RangeError('tensor payload too short')
  const dtype = TENSOR_DTYPES[payload[0]!]
  const ndim = payload[1]!
  if (!dtype || ndim > 8 || payload.byteLength < 2 + 4 * ndim) throw new RangeError('bad tensor header')
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  const shape = Array.from({ length: ndim }, (_, i) => view.getUint32(2 + 4 * i, true))
  const data = payload.subarray(2 + 4 * ndim)
  if (data.byteLength !== shape.reduce((a, d) => a * d, 1) * ELEMENT_BYTES[dtype]) throw new RangeError('tensor payload size does not match its shape')
  return { dtype, shape, data }
}
