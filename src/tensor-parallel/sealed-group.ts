/** A tensor-parallel group over sealed blocking sockets: rank 0 holds one connection to every other rank, each with its
 * own key for the group's cipher (AES-256-GCM or ChaCha20-Poly1305, as --cipher names it; handed over the pinned, handshaken link when the ranks met: start-sealed.ts) and
 * the link's frame format, counters and AAD (link/aead-channel.ts), so a frame that is altered, replayed, reordered or
 * sealed with another key fails to open. The bytes move through ffi/tp_socket.c because an all_sum happens in the middle
 * of a synchronous forward, where no event loop runs.
 *
 * all_sum: with two ranks both send their partial at once and each adds the two in rank order (x0 + x1: the same bits on
 * both); with more, rank 0 gathers every partial, adds them in rank order and sends the sum back. gatherLast: every rank
 * sends its part of the logits (lm_head split by vocabulary) to rank 0, which joins them. gatherBytes: every rank sends
 * rank 0 a message of its own (its sampling summary: model/split-sampling.ts). */
import { aeadImplementation, AeadReceiver, AeadSender, type CipherName } from '../link/aead-channel.ts'
import { BlockingSocket, failSocketCall } from './blocking-socket.ts'
import { LinkError } from '../link/errors.ts'
import { FRAME_HEADER_BYTES, FrameType, SEALED_HEADER_BYTES, TAG_BYTES } from '../link/frames.ts'
import type { StepBroadcast } from './pipeline.ts'
import type { Backend, Tensor } from '../tensor/backend.ts'
import type { TensorParallel } from '../tensor/tensor-parallel.ts'
import { ptr, type Pointer } from '../tensor/native.ts'
import { NATIVE_CIPHER_IDS } from '../link/native-aead.ts'
import { tpSocketLibrary } from './native-socket.ts'

/** A frame's size on the wire for a payload of n bytes. */
const frameBytes = (n: number) => FRAME_HEADER_BYTES + SEALED_HEADER_BYTES + n + TAG_BYTES

/** One connection between rank 0 and another rank, sealed both ways in the link's frame format; the sender's rank rides
 * in every frame's stage field (authenticated). Any failure leaves the channel unusable (the group closes it). */
export interface TpChannel {
  readonly peerRank: number
  send(type: number, payload: Uint8Array, timeoutMs: number): void
  /** The next frame, which must be of `type` with at most maxBytes of payload (timeoutMs < 0: wait without limit); into
   * `into` when it is large enough. */
  receive(type: number, maxBytes: number, timeoutMs: number, into?: Uint8Array): Uint8Array
  /** Two ranks: seals `mine` as a frame of `type` while receiving the peer's, and writes mine + theirs into out. */
  allSum2(type: number, mine: Float32Array, out: Float32Array, timeoutMs: number): void
  /** Without waiting: whether the peer closed or reset the connection (for a side that expects nothing between steps). */
  peerGone(): boolean
  close(): void
}

/** The channel in C (ffi/tp_channel.c): one call per all_sum, the cipher from the system's libcrypto. */
export class NativeTpChannel implements TpChannel {
  #handle: Pointer | null
  readonly #len = new BigInt64Array(1)

  /** rekeyInterval: frames per key (0: the link's 2^32; tests use small ones). */
  constructor(
    socket: BlockingSocket,
    key: Uint8Array,
    clusterId: string,
    ownRank: number,
    readonly peerRank: number,
    rekeyInterval = 0,
    readonly cipher: CipherName = 'aes-256-gcm',
  ) {
    const id = new TextEncoder().encode(clusterId)
    const out = new BigUint64Array(1)
    const fd = socket.detach()
    const rc = tpSocketLibrary().dbc_tpc_new(
      fd,
      NATIVE_CIPHER_IDS[cipher],
      ptr(key),
      ptr(id.byteLength ? id : new Uint8Array(1)),
      id.byteLength,
      ownRank,
      peerRank,
      rekeyInterval,
      ptr(out),
    )
    if (rc < 0) {
      tpSocketLibrary().dbc_sock_close(fd)
      failSocketCall(rc, 'setting up the sealed channel')
    }
    this.#handle = Number(out[0]) as unknown as Pointer
  }

  /** Whether the system's libcrypto, with this cipher, could be loaded (else ScriptTpChannel seals). */
  static available(cipher: CipherName = 'aes-256-gcm'): boolean {
    return tpSocketLibrary().dbc_tpc_available(NATIVE_CIPHER_IDS[cipher]) === 1
  }

  #h(): Pointer {
    if (this.#handle === null)
      throw new LinkError(
        'E_TP_STOPPED',
        'the tensor-parallel channel is closed',
        'the group forms again when the ranks meet again (restart a rank that died)',
      )
    return this.#handle
  }

  send(type: number, payload: Uint8Array, timeoutMs: number): void {
    const rc = tpSocketLibrary().dbc_tpc_send(
      this.#h(),
      type,
      ptr(payload.byteLength ? payload : EMPTY),
      payload.byteLength,
      timeoutMs,
    )
    if (rc < 0) failSocketCall(rc, `sending to rank ${this.peerRank}`)
  }

  receive(type: number, maxBytes: number, timeoutMs: number, into?: Uint8Array): Uint8Array {
    const lib = tpSocketLibrary()
    let rc = lib.dbc_tpc_recv_header(this.#h(), type, maxBytes, ptr(this.#len), timeoutMs)
    if (rc < 0) failSocketCall(rc, `receiving from rank ${this.peerRank}`)
    // sized to the frame: a buffer of maxBytes (64 MiB for a step) per call would be faulted in and collected each time
    const n = Number(this.#len[0])
    const buf = into && into.byteLength >= n ? into.subarray(0, n) : new Uint8Array(n)
    rc = lib.dbc_tpc_recv_payload(this.#h(), ptr(buf.byteLength ? buf : EMPTY), timeoutMs)
    if (rc < 0) failSocketCall(rc, `receiving from rank ${this.peerRank}`)
    return buf
  }

  allSum2(type: number, mine: Float32Array, out: Float32Array, timeoutMs: number): void {
    const rc = tpSocketLibrary().dbc_tpc_all_sum2(
      this.#h(),
      type,
      ptr(mine.length ? mine : EMPTY_F32),
      mine.length,
      ptr(out.length ? out : EMPTY_F32),
      timeoutMs,
    )
    if (rc < 0) failSocketCall(rc, `all_sum with rank ${this.peerRank}`)
  }

  peerGone(): boolean {
    return this.#handle === null || tpSocketLibrary().dbc_tpc_peer_gone(this.#handle) === 1
  }

  close(): void {
    if (this.#handle === null) return
    tpSocketLibrary().dbc_tpc_free(this.#handle)
    this.#handle = null
  }
}

const EMPTY = new Uint8Array(1)
const EMPTY_F32 = new Float32Array(1)

/** The channel in TypeScript (link/aead-channel.ts), where libcrypto is missing. */
export class ScriptTpChannel implements TpChannel {
  readonly #sender: AeadSender
  readonly #receiver: AeadReceiver
  #frame: Uint8Array = new Uint8Array(0)
  #reply = new Uint8Array(0)

  /** rekeyInterval: frames per key (0: the link's 2^32; tests use small ones). */
  constructor(
    readonly socket: BlockingSocket,
    key: Uint8Array,
    clusterId: string,
    readonly ownRank: number,
    readonly peerRank: number,
    rekeyInterval = 0,
    readonly cipher: CipherName = 'aes-256-gcm',
  ) {
    const frames = rekeyInterval > 0 ? BigInt(rekeyInterval) : undefined
    this.#sender = new AeadSender({
      cipher,
      key,
      direction: ownRank === 0 ? 1 : 2,
      clusterId,
      rekeyInterval: frames,
    })
    this.#receiver = new AeadReceiver({
      cipher,
      key,
      direction: ownRank === 0 ? 2 : 1,
      clusterId,
      rekeyInterval: frames,
    })
  }

  /** The sealed frame, in a buffer reused for frames of the same size (valid until the next seal). */
  #seal(type: number, payload: Uint8Array): Uint8Array {
    return (this.#frame = this.#sender.sealFrame({ type, stage: this.ownRank, requestId: 0n }, payload, this.#frame))
  }

  /** Opens a whole wire frame that must be of `type`. */
  #open(type: number, frame: Uint8Array): Uint8Array {
    const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
    if (
      frame.byteLength < FRAME_HEADER_BYTES ||
      Number(view.getBigUint64(0, true)) !== frame.byteLength - 8 ||
      frame[8] !== type
    ) {
      throw new LinkError(
        'E_TP_PROTOCOL',
        `rank ${this.peerRank} sent a frame of type ${frame[8]} and ${frame.byteLength} bytes where a ${type} was due`,
        'run the same dbcluster release with the same model on every rank',
      )
    }
    const { header, plaintext } = this.#receiver.open(type, frame.subarray(FRAME_HEADER_BYTES))
    if (header.stage !== this.peerRank)
      throw new LinkError(
        'E_TP_PROTOCOL',
        `a frame from rank ${header.stage} arrived on the connection to rank ${this.peerRank}`,
        'check what else reaches this port; the group forms again when the ranks meet again',
      )
    return plaintext
  }

  send(type: number, payload: Uint8Array, timeoutMs: number): void {
    this.socket.send(this.#seal(type, payload), timeoutMs)
  }

  receive(type: number, maxBytes: number, timeoutMs: number, into?: Uint8Array): Uint8Array {
    const head = this.socket.receive(FRAME_HEADER_BYTES, timeoutMs)
    const length = Number(new DataView(head.buffer).getBigUint64(0, true)) + 8
    if (head[8] !== type || length < frameBytes(0) || length > frameBytes(maxBytes)) {
      throw new LinkError(
        'E_TP_PROTOCOL',
        `rank ${this.peerRank} sent a frame of type ${head[8]} and ${length} bytes where a ${type} of at most ${frameBytes(maxBytes)} was due`,
        'run the same dbcluster release with the same model on every rank',
      )
    }
    const frame = new Uint8Array(length)
    frame.set(head)
    this.socket.exchange(new Uint8Array(0), frame.subarray(FRAME_HEADER_BYTES), timeoutMs)
    const plain = this.#open(type, frame)
    if (!into || into.byteLength < plain.byteLength) return plain
    into.set(plain)
    return into.subarray(0, plain.byteLength)
  }

  allSum2(type: number, mine: Float32Array, out: Float32Array, timeoutMs: number): void {
    const size = frameBytes(mine.byteLength)
    if (this.#reply.byteLength !== size) this.#reply = new Uint8Array(size)
    this.socket.exchange(this.#seal(type, bytesOf(mine)), this.#reply, timeoutMs)
    const theirs = floats(this.#open(type, this.#reply))
    // IEEE addition is commutative: mine + theirs has the same bits on both ranks
    for (let i = 0; i < out.length; i++) out[i] = mine[i]! + theirs[i]!
  }

  peerGone(): boolean {
    return this.socket.peerGone()
  }

  close(): void {
    this.socket.close()
  }
}

/** The C channel where the system's libcrypto loads with this cipher, else the TypeScript one (same frames, same keys). */
export function openTpChannel(
  socket: BlockingSocket,
  key: Uint8Array,
  clusterId: string,
  ownRank: number,
  peerRank: number,
  cipher: CipherName = 'aes-256-gcm',
): TpChannel {
  return NativeTpChannel.available(cipher)
    ? new NativeTpChannel(socket, key, clusterId, ownRank, peerRank, 0, cipher)
    : new ScriptTpChannel(socket, key, clusterId, ownRank, peerRank, 0, cipher)
}

/** Which channel seals with this cipher here, for the log line when the group forms. */
export function tpSealing(cipher: CipherName): string {
  return NativeTpChannel.available(cipher) ? 'in C, libcrypto' : `in TypeScript, ${aeadImplementation(cipher)}`
}

const floats = (b: Uint8Array) => new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)
const bytesOf = (v: Float32Array) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength)

/** Largest step message rank 0 sends (ids, slots, positions of a prefill chunk): generous, but bounded. */
const MAX_STEP_BYTES = 64 * 1024 * 1024

export class SealedTpGroup implements StepBroadcast {
  #closed = false
  #failure: Error | undefined
  #exchangeMs = 0
  /** Rank 0's receive buffer for the other ranks' partials and logits, reused while their size stays. */
  #incoming = new Uint8Array(0)
  /** Rank 0's receive buffers for gatherBytes, one per other rank (their messages are read together). */
  #gathered: Uint8Array[] = []
  readonly #onFailure: ((error: Error) => void)[] = []

  /** `channels`: on rank 0 one per other rank, in rank order; elsewhere the one to rank 0. `timeoutMs` bounds every
   * exchange inside a step; a rank waiting for the next step (idle) waits without limit, TCP keepalive watching. */
  constructor(
    readonly rank: number,
    readonly size: number,
    private channels: readonly TpChannel[],
    private readonly timeoutMs: number,
  ) {
    if (channels.length !== (rank === 0 ? size - 1 : 1))
      throw new LinkError('E_TP_GROUP', `rank ${rank} of ${size} holds ${channels.length} connections`)
  }

  /** After a failure, the group again over connections made at a new meeting: on rank 0 every other rank's, in rank
   * order; elsewhere the one to rank 0. The failure listeners stay; a `watch` must be started again. */
  restore(channels: readonly TpChannel[]): void {
    if (!this.#failure) throw new LinkError('E_TP_GROUP', 'the group has not failed: nothing to restore')
    if (channels.length !== (this.rank === 0 ? this.size - 1 : 1))
      throw new LinkError('E_TP_GROUP', `rank ${this.rank} of ${this.size} takes ${channels.length} connections back`)
    this.channels = channels
    this.#failure = undefined
    this.#closed = false
  }

  /** Rank 0: sends `bytes` to every other rank. The others: waits for rank 0's next message. */
  broadcast(bytes?: Uint8Array): Uint8Array {
    return this.#guard(() => this.#broadcast(bytes))
  }

  /** Σ over the ranks of `data` (the same length everywhere), added in rank order; into `into` when given. */
  allSum(data: Float32Array, into?: Float32Array): Float32Array {
    return this.#timed(() => this.#guard(() => this.#allSum(data, into ?? new Float32Array(data.length))))
  }

  /** Milliseconds spent in all_sums and gathers since the group was made (waiting for the other ranks included). */
  get exchangeMs(): number {
    return this.#exchangeMs
  }

  #timed<T>(run: () => T): T {
    const t0 = performance.now()
    try {
      return run()
    } finally {
      this.#exchangeMs += performance.now() - t0
    }
  }

  /** Rank 0, between steps: looks every `intervalMs` whether a rank's connection closed, so that a rank lost while
   * nothing runs fails the group (and its listeners hear it) before the next request, not during it. Returns the stop. */
  watch(intervalMs: number): () => void {
    const timer = setInterval(() => {
      if (this.#failure || this.#closed) return clearInterval(timer)
      const gone = this.channels.find((c) => c.peerGone())
      if (!gone) return
      try {
        this.#guard(() => {
          throw new LinkError(
            'E_TP_PEER_CLOSED',
            `rank ${gone.peerRank} went away (its connection closed)`,
            'start it again with the same --tp-rank: rank 0 takes it back',
          )
        })
      } catch {
        // recorded as the group's failure; the listeners have it
      }
    }, intervalMs)
    timer.unref()
    return () => clearInterval(timer)
  }

  /** The first failure (a rank lost, a frame that did not open): every later call fails with it at once. */
  get failure(): Error | undefined {
    return this.#failure
  }

  onFailure(listener: (error: Error) => void): void {
    this.#onFailure.push(listener)
  }

  /** A failed exchange leaves the streams out of step: the group closes and stays failed. */
  #guard<T>(run: () => T): T {
    if (this.#failure) throw this.#failure
    if (this.#closed)
      throw new LinkError(
        'E_TP_STOPPED',
        'the tensor-parallel group is closed',
        'the group forms again when the ranks meet again (restart a rank that died)',
      )
    try {
      return run()
    } catch (error) {
      this.#failure = error as Error
      this.close()
      for (const l of this.#onFailure) l(this.#failure)
      throw error
    }
  }

  #broadcast(bytes?: Uint8Array): Uint8Array {
    if (this.rank === 0) {
      for (const c of this.channels) c.send(FrameType.tpStep, bytes!, this.timeoutMs)
      return bytes!
    }
    return this.channels[0]!.receive(FrameType.tpStep, MAX_STEP_BYTES, -1)
  }

  #allSum(data: Float32Array, sum: Float32Array): Float32Array {
    if (this.size === 2) {
      this.channels[0]!.allSum2(FrameType.tpPartial, data, sum, this.timeoutMs)
      return sum
    }
    if (this.rank > 0) {
      const c = this.channels[0]!
      c.send(FrameType.tpPartial, bytesOf(data), this.timeoutMs)
      sum.set(floats(c.receive(FrameType.tpSum, data.byteLength, this.timeoutMs)))
      return sum
    }
    sum.set(data)
    const incoming = this.#incomingFor(data.byteLength)
    for (const c of this.channels) {
      const part = floats(c.receive(FrameType.tpPartial, data.byteLength, this.timeoutMs, incoming))
      if (part.length !== sum.length)
        throw new LinkError(
          'E_TP_PROTOCOL',
          `rank ${c.peerRank} sent ${part.length} values to sum, expected ${sum.length}`,
          'run the same model on every rank',
        )
      for (let i = 0; i < sum.length; i++) sum[i]! += part[i]!
    }
    for (const c of this.channels) c.send(FrameType.tpSum, bytesOf(sum), this.timeoutMs)
    return sum
  }

  /** Rank 0: its `part` (rows × n values) and every other rank's, joined row by row in rank order (rows × n × size).
   * The others: send `part` to rank 0 and get null. */
  gatherLast(part: Float32Array, rows: number, into?: Float32Array): Float32Array | null {
    return this.#timed(() => this.#guard(() => this.#gatherLast(part, rows, into)))
  }

  #gatherLast(part: Float32Array, rows: number, into?: Float32Array): Float32Array | null {
    if (this.rank > 0) {
      this.channels[0]!.send(FrameType.tpGather, bytesOf(part), this.timeoutMs)
      return null
    }
    const n = part.length / rows
    const width = n * this.size
    const out = into && into.length === rows * width ? into : new Float32Array(rows * width)
    const place = (values: Float32Array, rank: number) => {
      for (let r = 0; r < rows; r++) out.set(values.subarray(r * n, (r + 1) * n), r * width + rank * n)
    }
    place(part, 0)
    const incoming = this.#incomingFor(part.byteLength)
    for (const c of this.channels) {
      const theirs = floats(c.receive(FrameType.tpGather, part.byteLength, this.timeoutMs, incoming))
      if (theirs.length !== part.length)
        throw new LinkError(
          'E_TP_PROTOCOL',
          `rank ${c.peerRank} sent ${theirs.length} values to gather, expected ${part.length}`,
          'run the same model on every rank',
        )
      place(theirs, c.peerRank)
    }
    return out
  }

  /** Rank 0: `mine` and every other rank's message (at most `maxBytes` each), index = rank; views of buffers the next
   * gather reuses. The others: send `mine` to rank 0 and get null. */
  gatherBytes(mine: Uint8Array, maxBytes: number): Uint8Array[] | null {
    return this.#timed(() =>
      this.#guard(() => {
        if (this.rank > 0) {
          this.channels[0]!.send(FrameType.tpSample, mine, this.timeoutMs)
          return null
        }
        return [
          mine,
          ...this.channels.map((c, i) => {
            const got = c.receive(FrameType.tpSample, maxBytes, this.timeoutMs, this.#gathered[i])
            if (!this.#gathered[i] || got.buffer !== this.#gathered[i]!.buffer)
              this.#gathered[i] = new Uint8Array(got.buffer)
            return got
          }),
        ]
      }),
    )
  }

  #incomingFor(bytes: number): Uint8Array {
    if (this.#incoming.byteLength < bytes) this.#incoming = new Uint8Array(bytes)
    return this.#incoming
  }

  /** The seam for ModelStage.load({ tp }): sums in f32 whatever the activations' dtype, and returns that dtype. */
  tensorParallel(backend: Backend): TensorParallel {
    // one input and one output buffer, grown as needed and otherwise reused (steps of other sizes come and go: a prefill
    // chunk between decode steps): a fresh buffer per all_sum is memory faulted in anew, which costs more than the exchange
    let input = new Float32Array(0)
    let output = new Float32Array(0)
    let part = new Float32Array(0)
    let whole = new Float32Array(0)
    return {
      rank: this.rank,
      size: this.size,
      allSum: (x: Tensor): Tensor => {
        const n = x.shape.reduce((a, d) => a * d, 1)
        if (input.length < n) ((input = new Float32Array(n)), (output = new Float32Array(n)))
        const summed = backend.fromBytes(
          bytesOf(this.allSum(backend.toFloat32(x, input), output.subarray(0, n))),
          x.shape,
          'f32',
        )
        if (x.dtype === 'f32') return summed
        const cast = backend.astype(summed, x.dtype)
        backend.free(summed)
        return cast
      },
      gatherLast: (x: Tensor): Tensor => {
        const n = x.shape[x.shape.length - 1]!
        const rows = x.shape.reduce((a, d) => a * d, 1) / n
        if (part.length < rows * n)
          ((part = new Float32Array(rows * n)), (whole = new Float32Array(rows * n * this.size)))
        const joined = this.gatherLast(backend.toFloat32(x, part), rows, whole.subarray(0, rows * n * this.size))
        // borrowed, not copied: the caller reads the logits out before the next step's gather refills `whole`
        return joined
          ? backend.fromBytes(bytesOf(joined), [...x.shape.slice(0, -1), n * this.size], 'f32', { borrow: true })
          : x
      },
    }
  }

  close(): void {
    this.#closed = true
    for (const c of this.channels) c.close()
  }
}
