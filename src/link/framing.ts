/** Framing over a byte stream: `u64 LE length | u8 type | body`. The length is checked against the limit before any
 * buffer is allocated for the body, so a hostile peer cannot make us allocate more than `maxFrameBytes`. */
import { LinkError } from './errors.ts'
import { FRAME_HEADER_BYTES, frameTypeName } from './frames.ts'

export interface RawFrame {
  type: number
  body: Uint8Array
}

export function encodeFrame(type: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + body.byteLength)
  const length = body.byteLength + 1
  for (let i = 0, v = length; i < 8; i++, v = Math.floor(v / 256)) out[i] = v % 256
  out[8] = type
  out.set(body, FRAME_HEADER_BYTES)
  return out
}

/** Incremental decoder: feed chunks as they arrive, get whole frames; throws LinkError on the first bad frame.
 * A frame wholly inside one chunk is returned as a view of that chunk (valid until push returns: sockets reuse their read
 * buffer); a frame split across chunks is copied once into a buffer of the decoder's own (valid until the next push),
 * allocated only after the frame's length passed the limit and then reused. */
export class FrameDecoder {
  readonly #prefix = new Uint8Array(8)
  #prefixFilled = 0
  #frame: Uint8Array | null = null // the body of a frame in progress (type byte first)
  readonly #scratch = [new Uint8Array(0), new Uint8Array(0)]
  /** Which scratch buffer the frame in progress fills, and which one holds a frame returned by this push (-1: none). */
  #filling = 0
  #returned = -1
  #filled = 0
  /** Largest buffer this decoder ever allocated: never more than maxFrameBytes + 1. */
  largestAllocation = 0
  #error: LinkError | null = null

  /** Mutable: a link starts with the handshake's small limit and raises it once the peer is authenticated. */
  constructor(public maxFrameBytes: number) {}

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.#prefixFilled + this.#filled
  }

  /** Set once a bad frame was seen: the stream is unusable from there on. */
  get error(): LinkError | null {
    return this.#error
  }

  /** Whole frames in this chunk. A bad frame throws, unless good frames came before it in the same chunk: those are
   * returned and the error is left in `error` (and thrown by the next push), so the result does not depend on chunking. */
  push(chunk: Uint8Array): RawFrame[] {
    return this.pushUntil(chunk, () => false).frames
  }

  /** As push, but stops after the first frame whose type `stop` accepts: the bytes after it are returned undecoded (a
   * copy) in `rest`, to be pushed once the caller has raised the limit (the handshake's last frame ends its limit). */
  pushUntil(chunk: Uint8Array, stop: (type: number) => boolean): { frames: RawFrame[]; rest: Uint8Array | null } {
    if (this.#error) throw this.#error
    const frames: RawFrame[] = []
    let rest: Uint8Array | null = null
    this.#returned = -1 // the frames of the last push are read by now
    try {
      rest = this.#decode(chunk, frames, stop)
    } catch (error) {
      this.#error = error as LinkError
      if (frames.length === 0) throw error
    }
    return { frames, rest }
  }

  #decode(chunk: Uint8Array, frames: RawFrame[], stop: (type: number) => boolean): Uint8Array | null {
    const stopped = (at: number) => (stop(frames.at(-1)!.type) ? chunk.slice(at) : null)
    let at = 0
    while (at < chunk.byteLength) {
      if (this.#frame) {
        const part = Math.min(chunk.byteLength - at, this.#frame.byteLength - this.#filled)
        this.#frame.set(chunk.subarray(at, at + part), this.#filled)
        if (this.#filled === 0) checkType(chunk[at]!)
        this.#filled += part
        at += part
        if (this.#filled === this.#frame.byteLength) {
          frames.push({ type: this.#frame[0]!, body: this.#frame.subarray(1) })
          this.#returned = this.#filling
          this.#frame = null
          this.#filled = 0
          const rest = stopped(at)
          if (rest) return rest
        }
        continue
      }
      // the length prefix, possibly split across chunks
      let len: number
      if (this.#prefixFilled === 0 && chunk.byteLength - at >= 8) {
        len = lengthAt(chunk, at)
        at += 8
      } else {
        const part = Math.min(8 - this.#prefixFilled, chunk.byteLength - at)
        this.#prefix.set(chunk.subarray(at, at + part), this.#prefixFilled)
        this.#prefixFilled += part
        at += part
        if (this.#prefixFilled < 8) break
        this.#prefixFilled = 0
        len = lengthAt(this.#prefix, 0)
      }
      if (len < 1)
        throw new LinkError(
          'E_FRAME_EMPTY',
          'a frame declared zero length',
          'the peer is not speaking the dbcluster link protocol',
        )
      if (len > this.maxFrameBytes + 1) {
        throw new LinkError(
          'E_FRAME_TOO_LARGE',
          `a frame declared ${len < 2 ** 53 ? len : 'over 2^53'} bytes; the limit is ${this.maxFrameBytes}`,
          'the peer is broken or hostile; the link was closed',
        )
      }
      const need = len
      if (at < chunk.byteLength) checkType(chunk[at]!) // refuse an unknown type before buffering its body
      if (chunk.byteLength - at >= need) {
        frames.push({ type: chunk[at]!, body: chunk.subarray(at + 1, at + need) })
        at += need
        const rest = stopped(at)
        if (rest) return rest
        continue
      }
      // safe: need <= maxFrameBytes + 1, checked above; one buffer serves every split frame (fresh memory per frame
      // costs a page fault per 4 KiB), grown to the largest one so far
      // two of them: a frame completed from one at this chunk's start is still unread while the next split frame starts
      const which = this.#returned === 0 ? 1 : 0
      if (this.#scratch[which]!.byteLength < need) {
        this.#scratch[which] = new Uint8Array(need)
        if (need > this.largestAllocation) this.largestAllocation = need
      }
      this.#frame = this.#scratch[which]!.subarray(0, need)
      this.#filling = which
    }
    return null
  }
}

/** The u64 LE length prefix at b[at] as a number: exact below 2^53, and anything larger is refused by the limit check
 * anyway (a length of 2^53 or more reads as at least 2^53). No DataView: a fresh socket buffer would have to be
 * materialized for one. */
function lengthAt(b: Uint8Array, at: number): number {
  const lo = (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0
  const hi = (b[at + 4]! | (b[at + 5]! << 8) | (b[at + 6]! << 16) | (b[at + 7]! << 24)) >>> 0
  return hi * 2 ** 32 + lo
}

function checkType(type: number): void {
  if (!frameTypeName(type))
    throw new LinkError('E_FRAME_TYPE', `unknown frame type ${type}`, 'the peer runs another protocol version')
}
