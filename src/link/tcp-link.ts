/** The sealed link over TCP (Bun sockets): handshake first, then every frame sealed; a heartbeat keeps it honest. Any bad
 * frame, failed authentication, handshake error or silent peer closes it with a logged reason (docs/protocol.md). */
import { consola } from 'consola'
import type { Socket, TCPSocketListener } from 'bun'
import type { DbcError } from '../errors.ts'
import { TrustError } from '../trust/errors.ts'
import {
  InitiatorHandshake,
  ResponderHandshake,
  type Authorization,
  type HandshakeOptions,
  type HandshakeResult,
} from '../trust/handshake.ts'
import type { Identity } from '../trust/identity.ts'
import { AeadReceiver, AeadSender, frameImplementation, type AeadOptions, type CipherName } from './aead-channel.ts'
import { LinkError } from './errors.ts'
import {
  decodeError,
  encodeError,
  FrameType,
  frameTypeName,
  isHandshakeFrame,
  SEALED_HEADER_BYTES,
  TAG_BYTES,
  type FrameTypeCode,
} from './frames.ts'
import { encodeFrame, FrameDecoder, type RawFrame } from './framing.ts'
import { Heartbeat } from './health.ts'
import { peerText, RateLimitedLog } from '../peer-text.ts'

const log = consola.withTag('link')
/** Refusals of links that never authenticated, once per address and reason per window (a stranger may retry fast). */
const refusals = new RateLimitedLog((line) => log.warn(line))

export interface LinkOptions {
  identity: Identity
  serial: string
  clusterId: string
  /** Whether the peer's identity key may speak for its serial: a pin store, a coordinator-signed roster, or both. */
  authorize: (serial: string, publicKey: Uint8Array) => Authorization | Promise<Authorization>
  /** The AEAD of every frame (default AES-256-GCM); named in the handshake, and a peer that names another is refused. */
  cipher?: CipherName
  /** Largest payload accepted or sent; a longer declared frame closes the link before anything is allocated. */
  maxFrameBytes?: number
  handshakeTimeoutMs?: number
  pingIntervalMs?: number
  /** The peer is unavailable after this many ping intervals in which nothing arrived from it. */
  missedPings?: number
  /** Frames per key before both sides step the key with HKDF (default 2^32). */
  rekeyInterval?: bigint
  /** Who seals and opens the frames: the shim's C link channel where it loads (default), or the TypeScript channel
   * (tests and benchmarks compare the two; the bytes on the wire are the same). */
  frames?: AeadOptions['implementation']
  /** Payloads larger than this are sent as several sealed records (fragment frames), so the two ends' AEAD work and
   * the transfer overlap (default 64 KiB). */
  fragmentBytes?: number
  randomBytes?: (n: number) => Uint8Array
  /** Bytes this side appends to every pong after the ping's echo (a cluster node's live health, cluster/node-health);
   * the link neither reads nor checks them. The peer finds them in `stats.peerPong`. */
  pongPayload?: () => Uint8Array
}

export interface LinkFrame {
  type: FrameTypeCode
  stage: number
  requestId: bigint
  payload: Uint8Array
}

/** The request id of an error frame about the link itself (the sender is closing it, and says why). */
export const LINK_REQUEST_ID = 0xffff_ffff_ffff_ffffn
/** Reasons that came from the peer or its absence: not worth telling it. */
const PEER_CODES = new Set(['E_PEER_CLOSED', 'E_PEER_UNAVAILABLE'])

/** Frames a link holds for its first listener; more before anyone listens means the peer is misbehaving. */
const EARLY_FRAMES = 64

/** Until the peer is authenticated, frames are no larger than the handshake's own (fields of at most 4 KiB each): a
 * stranger cannot make this side hold more than this per connection. */
export const HANDSHAKE_FRAME_BYTES = 16 * 1024
/** Bytes that may arrive after the handshake's last frame while its check runs (sealed frames sent right after FINISH);
 * more before the link is established closes it. */
export const EARLY_BYTES = 1024 * 1024
/** Connections a listener lets handshake at once; more are closed on arrival (strangers cannot pile them up). */
export const MAX_PENDING_HANDSHAKES = 16

const DEFAULTS = {
  pongPayload: () => new Uint8Array(),
  cipher: 'aes-256-gcm' as CipherName,
  maxFrameBytes: 256 * 1024 * 1024,
  handshakeTimeoutMs: 5000,
  pingIntervalMs: 5000,
  missedPings: 3,
  fragmentBytes: 64 * 1024,
}
const random = (n: number) => crypto.getRandomValues(new Uint8Array(n))
/** Framing header, sealed header and tag around a sealed frame's plaintext. */
const SEALED_OVERHEAD = 9 + SEALED_HEADER_BYTES + TAG_BYTES
/** Written frames kept for reuse: bytes in all (a shard transfer keeps about this much in flight), and how many sizes. */
const SPARE_BYTES = 16 * 1024 * 1024
const SPARE_SIZES = 4
/** A large message's records are sealed into one buffer of up to this many bytes and written at once. */
const WRITE_BATCH_BYTES = 1024 * 1024
/** Message buffers handed back (recycle) kept for later messages, and the smallest worth keeping. */
const RECYCLED_BUFFERS = 8
const RECYCLE_MIN_BYTES = 256 * 1024

type SocketData = { link: SealedLink }
type CloseReason = DbcError | null

/** One established (or establishing) link. Created by connectLink / listenLinks; tests drive it through attach/data. */
export class SealedLink {
  peerSerial = ''
  peerPublicKey: Uint8Array = new Uint8Array()
  /** The peer's address as the socket reports it (for logs), or '' before attach. */
  remote = ''
  readonly #o: Required<Omit<LinkOptions, 'rekeyInterval' | 'frames'>> & Pick<LinkOptions, 'rekeyInterval' | 'frames'>
  readonly #decoder: FrameDecoder
  #socket: Pick<Socket<SocketData>, 'write' | 'end'> | null = null
  /** Bytes waiting for the socket, in order; `frame` is set where they are a sealed frame that may be sealed into again
   * once it is written (fresh memory for every frame costs a page fault per 4 KiB when the socket first touches it). */
  #queue: { bytes: Uint8Array; frame: Uint8Array | null }[] = []
  #queuedBytes = 0
  /** Written frames kept for reuse, by size (a link sends frames of a few sizes again and again). */
  readonly #spare = new Map<number, Uint8Array[]>()
  #spareBytes = 0
  #sender: AeadSender | null = null
  #receiver: AeadReceiver | null = null
  #initiator: InitiatorHandshake | null = null
  #responder: ResponderHandshake | null = null
  #closed = false
  #heartbeat: Heartbeat | null = null
  #handshakeTimer: ReturnType<typeof setTimeout> | null = null
  #established!: { resolve: (l: SealedLink) => void; reject: (e: Error) => void }
  readonly established: Promise<SealedLink>
  readonly #frameListeners: ((f: LinkFrame) => void)[] = []
  readonly #closeListeners: ((reason: CloseReason) => void)[] = []
  /** Frames sent and received after the handshake, and why the link closed. */
  /** Frames each way; when bytes last arrived (ms since the epoch); the last ping's round trip in ms (null before one). */
  readonly stats = {
    sent: 0,
    received: 0,
    closeReason: null as CloseReason,
    lastHeardAt: 0,
    rttMs: null as number | null,
    /** The bytes the peer appended to its last pong (LinkOptions.pongPayload) and when it arrived (ms since the
     * epoch), or null before a pong carried any. */
    peerPong: null as { payload: Uint8Array; at: number } | null,
  }

  constructor(
    readonly role: 'initiator' | 'responder',
    options: LinkOptions,
  ) {
    this.#o = { ...DEFAULTS, randomBytes: random, ...options }
    // the handshake's limit until the peer is authenticated (#establish raises it to the largest sealed payload)
    this.#decoder = new FrameDecoder(
      Math.min(HANDSHAKE_FRAME_BYTES, this.#o.maxFrameBytes + SEALED_HEADER_BYTES + TAG_BYTES),
    )
    this.established = new Promise((resolve, reject) => (this.#established = { resolve, reject }))
    this.established.catch(() => {}) // also reported through close listeners
    const hs: HandshakeOptions = {
      identity: options.identity,
      serial: options.serial,
      clusterId: options.clusterId,
      authorize: options.authorize,
      randomBytes: this.#o.randomBytes,
      timeoutMs: this.#o.handshakeTimeoutMs,
      cipher: this.#o.cipher,
    }
    if (role === 'initiator') this.#initiator = new InitiatorHandshake(hs)
    else this.#responder = new ResponderHandshake(hs)
  }

  /** A link whose handshake ran elsewhere (tests, fuzzing, benchmarks): keys from a HandshakeResult, on a given socket. */
  static withKeys(
    role: 'initiator' | 'responder',
    options: LinkOptions,
    result: HandshakeResult,
    socket: Pick<Socket<SocketData>, 'write' | 'end'>,
  ): SealedLink {
    const link = new SealedLink(role, options)
    link.#initiator = link.#responder = null
    link.#socket = socket
    link.#establish(result)
    return link
  }

  get closed(): boolean {
    return this.#closed
  }

  /** The largest buffer the frame decoder allocated (bounded by maxFrameBytes plus the sealed overhead). */
  get largestAllocation(): number {
    return this.#decoder.largestAllocation
  }

  /** Bytes the decoder holds for a frame not yet complete. */
  get bufferedBytes(): number {
    return this.#decoder.buffered
  }

  /** Bytes waiting for the socket to drain (backpressure). */
  get queuedBytes(): number {
    return this.#queuedBytes
  }

  onFrame(listener: (f: LinkFrame) => void): () => void {
    this.#frameListeners.push(listener)
    if (this.#unheard.length) {
      // frames that came before anyone listened (e.g. in the same read as the handshake's end) go to the first listener
      queueMicrotask(() => {
        const early = this.#unheard.splice(0)
        for (const f of early) this.#dispatch(f)
      })
    }
    return () => {
      const at = this.#frameListeners.indexOf(listener)
      if (at >= 0) this.#frameListeners.splice(at, 1)
    }
  }

  onClose(listener: (reason: CloseReason) => void): void {
    if (this.#closed) listener(this.stats.closeReason)
    else this.#closeListeners.push(listener)
  }

  /** The next frame that matches, or the reason the link closed first (or E_LINK_TIMEOUT): a waiting caller never hangs. */
  nextFrame(match: (f: LinkFrame) => boolean = () => true, timeoutMs?: number): Promise<LinkFrame> {
    if (this.#closed) return Promise.reject(this.#closedError())
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const off = this.onFrame((f) => {
        if (!match(f)) return
        finish()
        resolve(f)
      })
      const onClosed = () => {
        finish()
        reject(this.#closedError())
      }
      const finish = () => {
        off()
        if (timer) clearTimeout(timer)
        const at = this.#closeListeners.indexOf(onClosed)
        if (at >= 0) this.#closeListeners.splice(at, 1)
      }
      this.#closeListeners.push(onClosed)
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          finish()
          reject(
            new LinkError(
              'E_LINK_TIMEOUT',
              `no matching frame from ${this.peerSerial || 'the peer'} within ${timeoutMs} ms`,
            ),
          )
        }, timeoutMs)
      }
    })
  }

  /** Sends one sealed frame. Throws at once when the link is closed (callers get an error, never a hang). */
  send(type: FrameTypeCode, payload: Uint8Array, header: { stage?: number; requestId?: bigint } = {}): void {
    if (this.#closed) throw this.#closedError()
    if (!this.#sender) throw new LinkError('E_LINK_NOT_READY', 'the handshake has not finished')
    if (isHandshakeFrame(type) || type === FrameType.fragment)
      throw new LinkError('E_FRAME_UNEXPECTED', `'${frameTypeName(type)}' frames are the link's own`)
    if (payload.byteLength > this.#o.maxFrameBytes)
      throw new LinkError(
        'E_FRAME_TOO_LARGE',
        `payload of ${payload.byteLength} bytes exceeds ${this.#o.maxFrameBytes}`,
      )
    const stage = header.stage ?? 0
    const requestId = header.requestId ?? 0n
    // docs/protocol.md §Fragments: records go to the socket a batch at a time, as soon as the batch is sealed, so the
    // peer opens batch k while this side seals batch k+1, and a large message costs one write per batch, not per record
    const piece = Math.max(1, this.#o.fragmentBytes)
    const records = Math.max(1, Math.ceil(payload.byteLength / piece))
    for (let first = 0; first < records;) {
      let last = first
      let bytes = SEALED_OVERHEAD + Math.min(piece, payload.byteLength - first * piece)
      while (last + 1 < records && bytes + SEALED_OVERHEAD + piece <= WRITE_BATCH_BYTES)
        bytes += SEALED_OVERHEAD + Math.min(piece, payload.byteLength - ++last * piece)
      const batch = this.#takeSpare(bytes) ?? new Uint8Array(bytes)
      for (let r = first, at = 0; r <= last; r++) {
        const plaintext =
          records === 1 ? payload : payload.subarray(r * piece, Math.min(payload.byteLength, (r + 1) * piece))
        const size = SEALED_OVERHEAD + plaintext.byteLength
        const frameType = r === records - 1 ? type : FrameType.fragment
        this.#sender.sealFrame({ type: frameType, stage, requestId }, plaintext, batch.subarray(at, at + size))
        this.stats.sent++
        at += size
      }
      this.#write(batch, true)
      first = last + 1
    }
  }

  /** Keeps a written frame to seal into again, up to SPARE_BYTES in all, of a few sizes (the most recent ones). */
  #keep(frame: Uint8Array): void {
    const size = frame.byteLength
    if (this.#spareBytes + size > SPARE_BYTES) return
    let list = this.#spare.get(size)
    if (!list) {
      if (this.#spare.size >= SPARE_SIZES) {
        const [oldest, frames] = this.#spare.entries().next().value!
        this.#spareBytes -= oldest * frames.length
        this.#spare.delete(oldest)
      }
      this.#spare.set(size, (list = []))
    }
    list.push(frame)
    this.#spareBytes += size
  }

  #takeSpare(size: number): Uint8Array | undefined {
    const frame = this.#spare.get(size)?.pop()
    if (frame) this.#spareBytes -= size
    return frame
  }

  close(reason: CloseReason = null): void {
    if (this.#closed) return
    // tell the peer why, sealed, so its side (and its operator) sees this reason rather than a bare closed socket
    if (reason && this.#sender && !PEER_CODES.has(reason.code)) {
      try {
        this.send(FrameType.error, encodeError({ code: reason.code, message: reason.message }), {
          requestId: LINK_REQUEST_ID,
        })
      } catch {
        // the socket is already gone: nothing to tell
      }
    }
    this.#closed = true
    this.stats.closeReason = reason
    const from = this.remote ? ` (${this.remote})` : ''
    if (reason && this.#receiver) log.warn(`link ${this.peerSerial}${from} closed: ${reason.code}: ${reason.message}`)
    else if (reason)
      refusals.line(
        `${this.remote} ${reason.code}`,
        `link (handshaking)${from} closed: ${reason.code}: ${reason.message}`,
      )
    this.#heartbeat?.stop()
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer)
    this.#socket?.end()
    this.#queue = []
    this.#queuedBytes = 0
    this.#spare.clear()
    this.#spareBytes = 0
    this.#recycled.length = 0
    this.#sender?.free()
    this.#receiver?.free()
    this.#established.reject(reason ?? new LinkError('E_LINK_CLOSED', 'the link closed during the handshake'))
    for (const l of this.#closeListeners.splice(0)) l(reason)
  }

  #closedError(): DbcError {
    return (
      this.stats.closeReason ?? new LinkError('E_LINK_CLOSED', `the link to ${this.peerSerial || 'the peer'} is closed`)
    )
  }

  // ---- socket plumbing (called from the Bun socket handlers, or a test's stand-in) ----

  attach(socket: Pick<Socket<SocketData>, 'write' | 'end'> & { remoteAddress?: string }): void {
    this.#socket = socket
    this.remote = socket.remoteAddress ?? ''
    this.#handshakeTimer = setTimeout(
      () =>
        this.close(
          new TrustError(
            'E_HANDSHAKE_TIMEOUT',
            `the handshake did not finish within ${this.#o.handshakeTimeoutMs} ms`,
            'is the peer a dbcluster node of the same release?',
          ),
        ),
      this.#o.handshakeTimeoutMs,
    )
    if (this.#initiator) this.#write(encodeFrame(FrameType.hello, this.#initiator.hello()))
  }

  data(chunk: Uint8Array): void {
    if (this.#closed) return
    const now = Date.now()
    this.#heartbeat?.heard(now)
    this.stats.lastHeardAt = now
    if (this.#early !== null) {
      // the handshake's last frame is being checked: what follows waits, undecoded and bounded, for the keys
      this.#earlyBytes += chunk.byteLength
      if (this.#earlyBytes > EARLY_BYTES)
        return this.close(
          new LinkError(
            'E_FRAME_TOO_LARGE',
            `more than ${EARLY_BYTES} bytes arrived before the handshake finished`,
            'the peer is broken or hostile; the link was closed',
          ),
        )
      this.#early.push(chunk.slice())
      return
    }
    let frames: RawFrame[]
    try {
      if (this.#receiver) frames = this.#decoder.push(chunk)
      else {
        // before the keys: decode up to the handshake's last frame, under the handshake's limit
        const last = this.role === 'responder' ? FrameType.finish : FrameType.ack
        const { frames: got, rest } = this.#decoder.pushUntil(chunk, (type) => type === last)
        frames = got
        if (rest) {
          this.#early = rest.byteLength ? [rest] : []
          this.#earlyBytes = rest.byteLength
          if (this.#earlyBytes > EARLY_BYTES)
            return this.close(
              new LinkError(
                'E_FRAME_TOO_LARGE',
                `more than ${EARLY_BYTES} bytes arrived before the handshake finished`,
                'the peer is broken or hostile; the link was closed',
              ),
            )
        }
      }
    } catch (error) {
      return this.close(error as LinkError)
    }
    const bad = this.#decoder.error // good frames ahead of a bad one in the same chunk are still handled first
    if (this.#receiver && !this.#chainBusy) {
      // established and nothing queued behind an async handshake step: handle in place, no promise hop per frame
      for (const f of frames) {
        if (this.#closed) return
        try {
          this.#handleSealed(f)
        } catch (error) {
          return this.close(asCloseReason(error))
        }
      }
      if (bad) this.close(bad)
      return
    }
    // frames may be views of the socket's read buffer, which is reused once this call returns: copy what waits
    void this.#handleAll(
      frames.map((f) => ({ type: f.type, body: f.body.slice() })),
      bad,
    )
  }

  drain(): void {
    this.#flush()
  }

  /** Bytes after the handshake's last frame, held until the link is established (null: not in that window). */
  #early: Uint8Array[] | null = null
  #earlyBytes = 0

  #chain: Promise<void> = Promise.resolve()
  #chainBusy = 0
  /** Frames are handled strictly in order, even though the handshake steps are async. */
  #handleAll(frames: RawFrame[], bad: LinkError | null): Promise<void> {
    this.#chainBusy++
    this.#chain = this.#chain
      .then(async () => {
        for (const f of frames) {
          if (this.#closed) return
          try {
            await this.#handle(f)
          } catch (error) {
            const reason = asCloseReason(error)
            // tell the peer why before closing, so its operator sees the reason too (plaintext: no keys yet)
            if (!this.#sender)
              this.#write(encodeFrame(FrameType.error, encodeError({ code: reason.code, message: reason.message })))
            this.close(reason)
            return
          }
        }
        if (bad) this.close(bad)
      })
      .finally(() => this.#chainBusy--)
    return this.#chain
  }

  async #handle(f: RawFrame): Promise<void> {
    if (this.#receiver) return this.#handleSealed(f)
    if (f.type === FrameType.error) throw refusal(f.body)
    if (!isHandshakeFrame(f.type))
      throw new LinkError('E_FRAME_UNEXPECTED', `frame '${frameTypeName(f.type)}' before the handshake finished`)
    if (this.#responder && f.type === FrameType.hello)
      return this.#write(encodeFrame(FrameType.ack, await this.#responder.receiveHello(f.body)))
    if (this.#responder && f.type === FrameType.finish) return this.#establish(this.#responder.receiveFinish(f.body))
    if (this.#initiator && f.type === FrameType.ack) {
      const { finish, result } = await this.#initiator.receiveAck(f.body)
      this.#write(encodeFrame(FrameType.finish, finish))
      return this.#establish(result)
    }
    throw new LinkError('E_FRAME_UNEXPECTED', `handshake frame '${frameTypeName(f.type)}' out of turn`)
  }

  #handleSealed(f: RawFrame): void {
    if (isHandshakeFrame(f.type))
      throw new LinkError('E_FRAME_UNEXPECTED', `handshake frame '${frameTypeName(f.type)}' on an established link`)
    // the initiator holds keys before the responder has checked FINISH: a refusal of FINISH arrives as a plaintext error
    if (f.type === FrameType.error && this.stats.received === 0 && this.role === 'initiator' && isPlainError(f.body))
      throw refusal(f.body)
    const pieces = this.#pieces
    if (f.type !== FrameType.fragment && !pieces) {
      const { header, plaintext } = this.#receiver!.open(f.type, f.body)
      this.stats.received++
      return this.#deliver(f.type, header, plaintext)
    }
    // docs/protocol.md §Fragments: each record is opened straight into the message's buffer
    const at = pieces?.bytes ?? 0
    const bytes = at + Math.max(0, f.body.byteLength - SEALED_HEADER_BYTES - TAG_BYTES)
    if (bytes > this.#o.maxFrameBytes) {
      this.#receiver!.open(f.type, f.body) // authenticated first, as every record: a forged one is E_FRAME_AUTH
      throw new LinkError(
        'E_FRAME_TOO_LARGE',
        `a fragmented message passed ${this.#o.maxFrameBytes} bytes`,
        'the peer is broken or hostile; the link was closed',
      )
    }
    const buffer = this.#messageBuffer(pieces?.buffer ?? null, at, bytes)
    const { header } = this.#receiver!.openInto(f.type, f.body, buffer, at)
    this.stats.received++
    if (pieces && (header.stage !== pieces.stage || header.requestId !== pieces.requestId)) {
      throw new LinkError(
        'E_FRAGMENT',
        `a fragment of stage ${pieces.stage} / request ${pieces.requestId} was followed by stage ${header.stage} / request ${header.requestId}`,
      )
    }
    if (f.type === FrameType.fragment) {
      this.#pieces = { stage: header.stage, requestId: header.requestId, buffer, bytes }
      return
    }
    this.#pieces = null
    this.#lastMessageBytes = bytes
    this.#deliver(f.type, header, bytes === buffer.byteLength ? buffer : buffer.subarray(0, bytes))
  }

  /** A message's buffer with room for `bytes`: the one so far (its first `kept` bytes), grown when it must be; a new
   * message's is sized like the last message (messages on a link tend to repeat their size), within the limit, and is
   * one its owner handed back (recycle) where one fits. */
  #messageBuffer(buffer: Uint8Array | null, kept: number, bytes: number): Uint8Array {
    if (buffer && buffer.byteLength >= bytes) return buffer
    const size = Math.min(
      this.#o.maxFrameBytes,
      Math.max(bytes, buffer ? 2 * buffer.byteLength : this.#lastMessageBytes),
    )
    const grown = (!buffer && this.#takeRecycled(size)) || new Uint8Array(size)
    if (buffer && kept) grown.set(buffer.subarray(0, kept))
    return grown
  }

  /** A payload this link delivered, which its owner no longer reads (a shard transfer's chunk once it is written and
   * hashed): a later message may be opened into its memory instead of fresh memory (each fresh page costs a fault).
   * The owner must not touch it, or any view of its memory, afterwards. */
  recycle(payload: Uint8Array): void {
    if (this.#closed || payload.byteLength < RECYCLE_MIN_BYTES) return
    const whole = new Uint8Array(payload.buffer, 0, payload.buffer.byteLength)
    if (this.#recycled.length >= RECYCLED_BUFFERS || this.#recycled.some((b) => b.buffer === whole.buffer)) return
    this.#recycled.push(whole)
  }

  /** A handed-back buffer of at least `size` bytes (and at most twice that: a small message keeps no large buffer). */
  #takeRecycled(size: number): Uint8Array | undefined {
    const at = this.#recycled.findIndex((b) => b.byteLength >= size && b.byteLength <= 2 * size)
    return at < 0 ? undefined : this.#recycled.splice(at, 1)[0]!
  }

  readonly #recycled: Uint8Array[] = []

  #pieces: { stage: number; requestId: bigint; buffer: Uint8Array; bytes: number } | null = null
  #lastMessageBytes = 0

  #deliver(type: number, header: { stage: number; requestId: bigint }, plaintext: Uint8Array): void {
    if (type === FrameType.ping) return this.#pong(plaintext)
    if (type === FrameType.pong) {
      // liveness is any traffic (data() told the heartbeat); the echo of our clock gives the round trip
      if (plaintext.byteLength >= 8)
        this.stats.rttMs =
          Date.now() - Number(new DataView(plaintext.buffer, plaintext.byteOffset, 8).getBigUint64(0, true))
      // docs/protocol.md §Health: what follows the echo is the peer's own (a copy: the plaintext may be a reused buffer)
      if (plaintext.byteLength > 8) this.stats.peerPong = { payload: plaintext.slice(8), at: Date.now() }
      return
    }
    if (type === FrameType.error && header.requestId === LINK_REQUEST_ID) {
      const e = decodeError(plaintext)
      return this.close(
        new LinkError(
          'E_PEER_CLOSED',
          `${this.peerSerial} closed the link: ${e ? `${e.code}: ${peerText(e.message)}` : '(unreadable reason)'}`,
        ),
      )
    }
    const frame: LinkFrame = {
      type: type as FrameTypeCode,
      stage: header.stage,
      requestId: header.requestId,
      payload: plaintext,
    }
    if (this.#frameListeners.length === 0) {
      if (this.#unheard.length >= EARLY_FRAMES)
        throw new LinkError('E_FRAME_UNEXPECTED', `${EARLY_FRAMES} frames arrived before anyone listened`)
      this.#unheard.push(frame)
      return
    }
    this.#dispatch(frame)
  }

  /** Frames delivered while no listener was registered yet (at most EARLY_FRAMES). */
  readonly #unheard: LinkFrame[] = []

  #dispatch(frame: LinkFrame): void {
    const type = frame.type
    const listeners = this.#frameListeners
    // a listener may remove itself (nextFrame) or add one while it runs: walk a copy, unless there is only one
    for (const l of listeners.length === 1 ? [listeners[0]!] : [...listeners]) {
      try {
        l(frame)
      } catch (error) {
        log.error(
          `a frame listener failed on '${frameTypeName(type)}' from ${this.peerSerial}: ${(error as Error).message}`,
        )
      }
    }
  }

  #establish(result: HandshakeResult): void {
    this.peerSerial = result.peerSerial
    this.peerPublicKey = result.peerPublicKey
    const mine = this.role === 'initiator' ? 1 : 2
    const theirs = this.role === 'initiator' ? 2 : 1
    const common = {
      cipher: this.#o.cipher,
      clusterId: this.#o.clusterId,
      rekeyInterval: this.#o.rekeyInterval,
      implementation: this.#o.frames,
    }
    this.#sender = new AeadSender({
      ...common,
      direction: mine,
      key: mine === 1 ? result.initiatorKey : result.responderKey,
    })
    this.#receiver = new AeadReceiver({
      ...common,
      direction: theirs,
      key: theirs === 1 ? result.initiatorKey : result.responderKey,
    })
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer)
    // authenticated: frames up to the largest payload plus the sealed header and tag; what waited is decoded now
    this.#decoder.maxFrameBytes = this.#o.maxFrameBytes + SEALED_HEADER_BYTES + TAG_BYTES
    const early = this.#early
    this.#early = null
    if (early?.length) queueMicrotask(() => early.forEach((chunk) => this.data(chunk)))
    this.#heartbeat = new Heartbeat(
      { intervalMs: this.#o.pingIntervalMs, missedPings: this.#o.missedPings },
      () => this.#ping(),
      (silentMs) =>
        this.close(
          new LinkError(
            'E_PEER_UNAVAILABLE',
            `${this.peerSerial} missed ${this.#o.missedPings} pings (silent for ${silentMs} ms)`,
            'the link reconnects when the peer returns',
          ),
        ),
    )
    log.debug(
      `link to ${this.peerSerial} established (${this.#o.cipher}, ${frameImplementation(this.#o.cipher, this.#o.frames)})`,
    )
    this.#established.resolve(this)
  }

  /** The ping's payload echoed, then this side's pong payload, if it has one. */
  #pong(ping: Uint8Array): void {
    const extra = this.#o.pongPayload()
    if (extra.byteLength === 0) return this.send(FrameType.pong, ping)
    const out = new Uint8Array(ping.byteLength + extra.byteLength)
    out.set(ping)
    out.set(extra, ping.byteLength)
    this.send(FrameType.pong, out)
  }

  #ping(): void {
    const now = new Uint8Array(8)
    new DataView(now.buffer).setBigUint64(0, BigInt(Date.now()), true)
    try {
      this.send(FrameType.ping, now)
    } catch (error) {
      this.close(asCloseReason(error))
    }
  }

  /** Queues bytes for the socket; a sealed frame (`reusable`) is kept to seal into again once it is written. */
  #write(bytes: Uint8Array, reusable = false): void {
    if (this.#closed) return
    if (this.#queue.length === 0 && this.#socket) {
      // nothing waits: straight to the socket, queued only for what it did not take
      const written = this.#socket.write(bytes)
      if (written < 0) return this.close(new LinkError('E_SOCKET', 'the socket refused a write'))
      if (written === bytes.byteLength) return void (reusable && this.#keep(bytes))
      this.#queue.push({ bytes: bytes.subarray(written), frame: reusable ? bytes : null })
      this.#queuedBytes += bytes.byteLength - written
      return
    }
    this.#queue.push({ bytes, frame: reusable ? bytes : null })
    this.#queuedBytes += bytes.byteLength
  }

  #flush(): void {
    const socket = this.#socket
    if (!socket) return
    while (this.#queue.length) {
      const head = this.#queue[0]!
      const written = socket.write(head.bytes)
      if (written < 0) return this.close(new LinkError('E_SOCKET', 'the socket refused a write'))
      this.#queuedBytes -= Math.max(0, written)
      if (written < head.bytes.byteLength) {
        head.bytes = head.bytes.subarray(written)
        return // wait for drain
      }
      this.#queue.shift()
      if (head.frame) this.#keep(head.frame)
    }
  }
}

function asCloseReason(error: unknown): DbcError {
  if (error instanceof LinkError || error instanceof TrustError) return error
  return new LinkError('E_LINK', (error as Error)?.message ?? String(error))
}

const isPlainError = (body: Uint8Array) => decodeError(body) !== null

/** The peer's plaintext `error` frame during the handshake, as the error it names (so both operators see one code). */
function refusal(body: Uint8Array): TrustError {
  const e = decodeError(body)
  return new TrustError(
    e?.code ?? 'E_PEER_REFUSED',
    `the peer refused the handshake: ${e ? `${e.code}: ${peerText(e.message)}` : '(unreadable reason)'}`,
  )
}

const handlers = {
  open(socket: Socket<SocketData>) {
    socket.data.link.attach(socket)
  },
  data(socket: Socket<SocketData>, chunk: Buffer) {
    // a plain Uint8Array view: a Buffer's slice() is a view too, and the link copies what it keeps with slice()
    socket.data.link.data(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))
  },
  drain(socket: Socket<SocketData>) {
    socket.data.link.drain()
  },
  close(socket: Socket<SocketData>) {
    const link = socket.data.link
    if (!link.closed)
      link.close(new LinkError('E_PEER_CLOSED', `${link.peerSerial || 'the peer'} closed the connection`))
  },
  error(socket: Socket<SocketData>, error: Error) {
    socket.data.link.close(new LinkError('E_SOCKET', error.message))
  },
}

/** Connects and runs the handshake; resolves with the established link or rejects with the reason. */
export async function connectLink(host: string, port: number, options: LinkOptions): Promise<SealedLink> {
  const link = new SealedLink('initiator', options)
  try {
    await Bun.connect<SocketData>({ hostname: host, port, data: { link }, socket: handlers })
  } catch (error) {
    throw new LinkError(
      'E_CONNECT',
      `cannot reach ${host}:${port}: ${(error as Error).message}`,
      'is the peer running and is the address right?',
    )
  }
  return link.established
}

/** Accepts links; each is handed to onLink once its handshake succeeded (refused peers are closed and logged). At most
 * `maxPending` connections handshake at once: one more is closed on arrival, and that is logged once per window. */
export function listenLinks(
  host: string,
  port: number,
  options: LinkOptions,
  onLink: (link: SealedLink) => void,
  maxPending = MAX_PENDING_HANDSHAKES,
): TCPSocketListener<SocketData> {
  let pending = 0
  return Bun.listen<SocketData>({
    hostname: host,
    port,
    socket: {
      ...handlers,
      open(socket) {
        const link = new SealedLink('responder', options)
        socket.data = { link }
        if (pending >= maxPending) {
          refusals.line(
            `${socket.remoteAddress} pending`,
            `refused a connection from ${socket.remoteAddress}: ${maxPending} handshakes are already pending on ${host}:${port}`,
          )
          link.close(null)
          socket.end()
          return
        }
        pending++
        const settled = () => void pending--
        link.established.then(settled, settled)
        link.attach(socket)
        link.established.then(onLink, () => {})
      },
    },
  })
}
