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
  new DataView(out.buffer).setBigUint64(0, BigInt(body.byteLength + 1), true)
  out[8] = type
  out.set(body, FRAME_HEADER_BYTES)
  return out
}

/** Incremental decoder: feed chunks as they arrive, get whole frames. Throws LinkError on the first bad frame. */
export class FrameDecoder {
  #chunks: Uint8Array[] = []
  #buffered = 0
  #need = -1 // bytes of the current frame after the length prefix, once known

  constructor(readonly maxFrameBytes: number) {}

  push(chunk: Uint8Array): RawFrame[] {
    this.#chunks.push(chunk)
    this.#buffered += chunk.byteLength
    const frames: RawFrame[] = []
    for (;;) {
      if (this.#need < 0) {
        if (this.#buffered < 8) break
        const prefix = this.#take(8, false)
        const len = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true)
        if (len < 1n) throw new LinkError('E_FRAME_EMPTY', 'a frame declared zero length', 'the peer is not speaking the dbcluster link protocol')
        if (len > BigInt(this.maxFrameBytes + 1)) {
          throw new LinkError('E_FRAME_TOO_LARGE', `a frame declared ${len} bytes; the limit is ${this.maxFrameBytes}`, 'the peer is broken or hostile; the link was closed')
        }
        this.#need = Number(len)
        this.#take(8, true)
      }
      if (this.#buffered < this.#need) break
      const bytes = this.#take(this.#need, true)
      this.#need = -1
      const type = bytes[0]!
      if (!frameTypeName(type)) throw new LinkError('E_FRAME_TYPE', `unknown frame type ${type}`, 'the peer runs another protocol version')
      frames.push({ type, body: bytes.subarray(1) })
    }
    // The socket may reuse its read buffer after this call: keep a copy of whatever stays buffered. Frames returned
    // above may be views of it, so callers consume them before returning (SealedLink does) or copy them.
    const last = this.#chunks.length - 1
    if (last >= 0 && this.#chunks[last]!.buffer === chunk.buffer) this.#chunks[last] = this.#chunks[last]!.slice()
    return frames
  }

  /** The first n buffered bytes (a view when one chunk holds them all, else a copy); consumes them when `consume`. */
  #take(n: number, consume: boolean): Uint8Array {
    const first = this.#chunks[0]!
    if (first.byteLength >= n) {
      const view = first.subarray(0, n)
      if (consume) {
        if (first.byteLength === n) this.#chunks.shift()
        else this.#chunks[0] = first.subarray(n)
        this.#buffered -= n
      }
      return view
    }
    const out = new Uint8Array(n)
    let filled = 0
    let i = 0
    while (filled < n) {
      const c = this.#chunks[i]!
      const part = Math.min(c.byteLength, n - filled)
      out.set(c.subarray(0, part), filled)
      filled += part
      if (consume) {
        if (part === c.byteLength) this.#chunks.shift()
        else this.#chunks[0] = c.subarray(part)
      } else i++
    }
    if (consume) this.#buffered -= n
    return out
  }
}
