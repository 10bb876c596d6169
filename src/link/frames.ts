/** Frame types of the link, in one place, with their payload layouts (docs/protocol.md §Frame types).
 * Wire: u64 LE length of what follows | u8 type | body. Handshake frames carry their message as the body; every later
 * frame is sealed: body = u64 LE seq | u32 LE stage | u64 LE request id | AEAD ciphertext ‖ 16-byte tag, and the
 * layouts below describe the plaintext inside. All integers are little-endian; no payload is JSON. */
import { assertNever } from '../errors.ts'

export const FrameType = {
  /** handshake (plaintext): docs/protocol.md §Handshake */
  hello: 1,
  ack: 2,
  finish: 3,
  /** u64 sender clock (ms); the pong echoes it */
  ping: 4,
  /** the ping's u64, echoed, then optional bytes of the sender's own (the cluster's node health: cluster/node-health) */
  pong: 5,
  /** a step's composition (rows, positions, sampling, admissions, evictions): bytes owned by cluster/step-messages */
  step: 6,
  /** tensor: u8 dtype | u8 ndim | u32 shape × ndim | raw little-endian elements */
  activation: 7,
  /** sampled token ids from the last stage: u32 count | u32 id × count */
  tokens: 8,
  /** a request ended (its id is in the sealed header): u32 KV slot to free on every stage */
  sessionEnd: 9,
  /** u16 code length | ASCII code (E_…) | UTF-8 message; plaintext only while handshaking, sealed after */
  error: 10,
  /** model distribution: u64 size | 32-byte SHA-256 | UTF-8 name */
  fileOffer: 11,
  /** u64 offset | bytes */
  fileChunk: 12,
  /** opaque application bytes (benchmarks, tests, rdma-ping over the link) */
  data: 13,
  /** the whole file arrived: 32-byte SHA-256 the receiver computed */
  fileDone: 14,
  /** a piece of a larger message (TLS-style records, so sealing, sending and opening overlap): raw bytes; the pieces'
   * plaintexts in order, then the final frame's (which carries the real type), form the message. Same stage and request id. */
  fragment: 15,
  /** the first frame a dialer sends on a cluster link: u8 role (1 ring successor, 2 control) | u32 sender rank */
  role: 16,
  /** stage → head on a control link: the stage's rank, usable memory and what it has loaded (cluster/join-messages) */
  join: 17,
  /** head → stage on a control link: the stage's layer range and KV geometry, or why there is none (cluster/join-messages) */
  plan: 18,
  /** tensor parallel (tensor-parallel/sealed-group): the first frame on a rank's data socket, proving it holds the key: u32 rank */
  tpHello: 19,
  /** tensor parallel, rank 0 → the others: an open, close, step or stop for them to replay (tensor-parallel/pipeline) */
  tpStep: 20,
  /** tensor parallel: this rank's partial sum, f32 little-endian */
  tpPartial: 21,
  /** tensor parallel, rank 0 → the others (3 ranks or more): the sum of every rank's partial, f32 little-endian */
  tpSum: 22,
  /** tensor parallel, the others → rank 0: this rank's part of the logits (lm_head split by vocabulary), f32 */
  tpGather: 23,
  /** tensor parallel, the others → rank 0: this rank's sampling summary of its vocabulary slice (model/split-sampling) */
  tpSample: 24,
  /** head → stage on a control link: finish and exit (cluster/stop-message) */
  stop: 25,
  /** head → stage on a control link: send your log lines after a sequence number (cluster/log-messages) */
  logsRequest: 26,
  /** stage → head on a control link, answering logsRequest under its request id (cluster/log-messages) */
  logs: 27,
} as const

export type FrameTypeName = keyof typeof FrameType
export type FrameTypeCode = (typeof FrameType)[FrameTypeName]

const NAMES = new Map<number, FrameTypeName>(Object.entries(FrameType).map(([k, v]) => [v, k as FrameTypeName]))
export const frameTypeName = (code: number): FrameTypeName | undefined => NAMES.get(code)
export const isHandshakeFrame = (code: number) =>
  code === FrameType.hello || code === FrameType.ack || code === FrameType.finish

/** Length prefix (8) + type (1). */
export const FRAME_HEADER_BYTES = 9
/** seq (8) + stage (4) + request id (8) in front of every sealed body. */
export const SEALED_HEADER_BYTES = 20
export const TAG_BYTES = 16

export class PayloadError extends RangeError {}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength)
const utf8 = new TextDecoder('utf-8', { fatal: true })

// ---- tensor payloads: dtype u8 | ndim u8 | shape u32 LE × ndim | raw little-endian bytes (never JSON) ----

export const TENSOR_DTYPES = ['f32', 'f16', 'bf16', 'u32', 'i32', 'u8'] as const
export type TensorDtype = (typeof TENSOR_DTYPES)[number]
const ELEMENT_BYTES: Record<TensorDtype, number> = { f32: 4, f16: 2, bf16: 2, u32: 4, i32: 4, u8: 1 }
const MAX_NDIM = 8

export interface TensorPayload {
  dtype: TensorDtype
  shape: number[]
  data: Uint8Array
}

export function encodeTensor(dtype: TensorDtype, shape: readonly number[], data: Uint8Array): Uint8Array {
  if (shape.length > MAX_NDIM) throw new PayloadError(`a tensor has at most ${MAX_NDIM} dimensions`)
  if (data.byteLength !== shape.reduce((a, d) => a * d, 1) * ELEMENT_BYTES[dtype])
    throw new PayloadError('tensor data size does not match its shape')
  const out = new Uint8Array(2 + 4 * shape.length + data.byteLength)
  const v = view(out)
  out[0] = TENSOR_DTYPES.indexOf(dtype)
  out[1] = shape.length
  shape.forEach((d, i) => v.setUint32(2 + 4 * i, d, true))
  out.set(data, 2 + 4 * shape.length)
  return out
}

/** The data is a view of the payload (no copy). */
export function decodeTensor(payload: Uint8Array): TensorPayload {
  if (payload.byteLength < 2) throw new PayloadError('tensor payload too short')
  const dtype = TENSOR_DTYPES[payload[0]!]
  const ndim = payload[1]!
  if (!dtype || ndim > MAX_NDIM || payload.byteLength < 2 + 4 * ndim) throw new PayloadError('bad tensor header')
  const v = view(payload)
  const shape = Array.from({ length: ndim }, (_, i) => v.getUint32(2 + 4 * i, true))
  const data = payload.subarray(2 + 4 * ndim)
  if (data.byteLength !== shape.reduce((a, d) => a * d, 1) * ELEMENT_BYTES[dtype])
    throw new PayloadError('tensor payload size does not match its shape')
  return { dtype, shape, data }
}

// ---- the other payloads ----

export interface ErrorPayload {
  code: string
  message: string
}

const CODE = /^E_[A-Z0-9_]{1,60}$/

export function encodeError(e: ErrorPayload): Uint8Array {
  const code = CODE.test(e.code) ? e.code : 'E_UNKNOWN'
  const message = new TextEncoder().encode(e.message)
  const out = new Uint8Array(2 + code.length + message.byteLength)
  view(out).setUint16(0, code.length, true)
  out.set(new TextEncoder().encode(code), 2)
  out.set(message, 2 + code.length)
  return out
}

/** null when the bytes are not an error payload (wrong shape, bad code, invalid UTF-8). */
export function decodeError(payload: Uint8Array): ErrorPayload | null {
  if (payload.byteLength < 2) return null
  const n = view(payload).getUint16(0, true)
  if (payload.byteLength < 2 + n) return null
  try {
    const code = utf8.decode(payload.subarray(2, 2 + n))
    if (!CODE.test(code)) return null
    return { code, message: utf8.decode(payload.subarray(2 + n)) }
  } catch {
    return null
  }
}

export type LinkMessage =
  | { type: 'ping'; sentAtMs: bigint }
  /** extra: the bytes after the echo (absent when there are none); the link hands them on unread */
  | { type: 'pong'; sentAtMs: bigint; extra?: Uint8Array }
  | { type: 'step' | 'role' | 'join' | 'plan' | 'stop' | 'logsRequest' | 'logs'; bytes: Uint8Array }
  | { type: 'activation'; tensor: TensorPayload }
  | { type: 'tokens'; ids: Uint32Array }
  | { type: 'sessionEnd'; slot: number }
  | { type: 'error'; error: ErrorPayload }
  | { type: 'fileOffer'; size: bigint; sha256: Uint8Array; name: string }
  | { type: 'fileChunk'; offset: bigint; bytes: Uint8Array }
  | { type: 'fileDone'; sha256: Uint8Array }
  | { type: 'data'; bytes: Uint8Array }

/** The payload bytes for a sealed frame's message. */
export function encodeMessage(m: LinkMessage): { type: FrameTypeCode; payload: Uint8Array } {
  switch (m.type) {
    case 'ping':
    case 'pong': {
      const extra = m.type === 'pong' ? (m.extra ?? new Uint8Array()) : new Uint8Array()
      const out = new Uint8Array(8 + extra.byteLength)
      view(out).setBigUint64(0, m.sentAtMs, true)
      out.set(extra, 8)
      return { type: FrameType[m.type], payload: out }
    }
    case 'step':
    case 'role':
    case 'join':
    case 'plan':
    case 'stop':
    case 'logsRequest':
    case 'logs':
    case 'data':
      return { type: FrameType[m.type], payload: m.bytes }
    case 'activation':
      return { type: FrameType.activation, payload: encodeTensor(m.tensor.dtype, m.tensor.shape, m.tensor.data) }
    case 'tokens': {
      const out = new Uint8Array(4 + 4 * m.ids.length)
      const v = view(out)
      v.setUint32(0, m.ids.length, true)
      m.ids.forEach((id, i) => v.setUint32(4 + 4 * i, id, true))
      return { type: FrameType.tokens, payload: out }
    }
    case 'sessionEnd': {
      const out = new Uint8Array(4)
      view(out).setUint32(0, m.slot, true)
      return { type: FrameType.sessionEnd, payload: out }
    }
    case 'error':
      return { type: FrameType.error, payload: encodeError(m.error) }
    case 'fileOffer': {
      if (m.sha256.byteLength !== 32) throw new PayloadError('a file offer carries a 32-byte SHA-256')
      const name = new TextEncoder().encode(m.name)
      const out = new Uint8Array(40 + name.byteLength)
      view(out).setBigUint64(0, m.size, true)
      out.set(m.sha256, 8)
      out.set(name, 40)
      return { type: FrameType.fileOffer, payload: out }
    }
    case 'fileChunk': {
      const out = new Uint8Array(8 + m.bytes.byteLength)
      view(out).setBigUint64(0, m.offset, true)
      out.set(m.bytes, 8)
      return { type: FrameType.fileChunk, payload: out }
    }
    case 'fileDone':
      if (m.sha256.byteLength !== 32) throw new PayloadError('file done carries a 32-byte SHA-256')
      return { type: FrameType.fileDone, payload: m.sha256 }
    default:
      return assertNever(m, 'link message')
  }
}

/** Parses a sealed frame's plaintext by its type; throws PayloadError on a payload that does not fit its layout. */
export function decodeMessage(type: number, payload: Uint8Array): LinkMessage {
  const name = frameTypeName(type)
  const need = (n: number, exact = true) => {
    if (exact ? payload.byteLength !== n : payload.byteLength < n)
      throw new PayloadError(`${name} payload of ${payload.byteLength} bytes does not fit its layout`)
  }
  switch (name) {
    case undefined:
    case 'hello':
    case 'ack':
    case 'finish':
    case 'fragment': // reassembled by the link; never a message of its own
      throw new PayloadError(`frame type ${type} has no sealed payload of its own`)
    case 'tpHello':
    case 'tpStep':
    case 'tpPartial':
    case 'tpSum':
    case 'tpGather':
    case 'tpSample':
      throw new PayloadError(`frame type ${type} belongs to tensor-parallel sockets, not to a link`)
    case 'ping':
      need(8)
      return { type: name, sentAtMs: view(payload).getBigUint64(0, true) }
    case 'pong': {
      need(8, false)
      const sentAtMs = view(payload).getBigUint64(0, true)
      return payload.byteLength > 8 ? { type: name, sentAtMs, extra: payload.subarray(8) } : { type: name, sentAtMs }
    }
    case 'step': // the cluster's own messages: cluster/step-messages.ts, join-messages.ts, stop-message.ts, log-messages.ts
    case 'role':
    case 'join':
    case 'plan':
    case 'stop':
    case 'logsRequest':
    case 'logs':
    case 'data':
      return { type: name, bytes: payload }
    case 'activation':
      return { type: 'activation', tensor: decodeTensor(payload) }
    case 'tokens': {
      need(4, false)
      const count = view(payload).getUint32(0, true)
      need(4 + 4 * count)
      const ids = new Uint32Array(count)
      for (let i = 0; i < count; i++) ids[i] = view(payload).getUint32(4 + 4 * i, true)
      return { type: 'tokens', ids }
    }
    case 'sessionEnd':
      need(4)
      return { type: 'sessionEnd', slot: view(payload).getUint32(0, true) }
    case 'error': {
      const error = decodeError(payload)
      if (!error) throw new PayloadError('error payload does not fit its layout')
      return { type: 'error', error }
    }
    case 'fileOffer':
      need(40, false)
      try {
        return {
          type: 'fileOffer',
          size: view(payload).getBigUint64(0, true),
          sha256: payload.subarray(8, 40),
          name: utf8.decode(payload.subarray(40)),
        }
      } catch {
        throw new PayloadError('file offer name is not UTF-8')
      }
    case 'fileChunk':
      need(8, false)
      return { type: 'fileChunk', offset: view(payload).getBigUint64(0, true), bytes: payload.subarray(8) }
    case 'fileDone':
      need(32)
      return { type: 'fileDone', sha256: payload }
    default:
      return assertNever(name, 'frame type')
  }
}
