/** The sealed link over TCP (Bun sockets): handshake first, then every frame sealed; pings keep it honest. Any bad
 * frame, failed authentication, handshake error or silent peer closes it with a logged reason. */
import { consola } from 'consola'
import type { Socket, TCPSocketListener } from 'bun'
import { TrustError } from '../trust/errors.ts'
import { InitiatorHandshake, ResponderHandshake, type Authorization, type HandshakeResult } from '../trust/handshake.ts'
import type { Identity } from '../trust/identity.ts'
import { AeadReceiver, AeadSender, type CipherName } from './aead-channel.ts'
import { LinkError } from './errors.ts'
import { FrameType, frameTypeName, isHandshakeFrame, type FrameTypeCode } from './frames.ts'
import { encodeFrame, FrameDecoder, type RawFrame } from './framing.ts'

const log = consola.withTag('link')

export interface LinkOptions {
  identity: Identity
  serial: string
  clusterId: string
  authorize: (serial: string, publicKey: Uint8Array) => Authorization | Promise<Authorization>
  cipher?: CipherName
  maxFrameBytes?: number
  handshakeTimeoutMs?: number
  pingIntervalMs?: number
  /** The peer is unavailable after this many ping intervals without a pong. */
  missedPings?: number
  rekeyInterval?: bigint
  randomBytes?: (n: number) => Uint8Array
}

export interface LinkFrame {
  type: FrameTypeCode
  stage: number
  requestId: bigint
  payload: Uint8Array
}

const DEFAULTS = { cipher: 'aes-256-gcm' as CipherName, maxFrameBytes: 256 * 1024 * 1024, handshakeTimeoutMs: 5000, pingIntervalMs: 5000, missedPings: 3 }
const random = (n: number) => crypto.getRandomValues(new Uint8Array(n))

type SocketData = { link: SealedLink }

/** One established (or establishing) link. Created by connectLink / listenLinks. */
export class SealedLink {
  peerSerial = ''
  peerPublicKey: Uint8Array = new Uint8Array()
  readonly #o: Required<Omit<LinkOptions, 'rekeyInterval'>> & Pick<LinkOptions, 'rekeyInterval'>
  readonly #decoder: FrameDecoder
  #socket: Socket<SocketData> | null = null
  #queue: Uint8Array[] = []
  #sender: AeadSender | null = null
  #receiver: AeadReceiver | null = null
  #initiator: InitiatorHandshake | null = null
  #responder: ResponderHandshake | null = null
  #closed = false
  #lastPong = 0
  #pingTimer: ReturnType<typeof setInterval> | null = null
  #handshakeTimer: ReturnType<typeof setTimeout> | null = null
  #established!: { resolve: (l: SealedLink) => void; reject: (e: Error) => void }
  readonly established: Promise<SealedLink>
  readonly #frameListeners: ((f: LinkFrame) => void)[] = []
  readonly #closeListeners: ((reason: LinkError | null) => void)[] = []
  /** Frames sent and received after the handshake, and why the link closed. */
  readonly stats = { sent: 0, received: 0, closeReason: null as LinkError | null }

  constructor(
    readonly role: 'initiator' | 'responder',
    options: LinkOptions,
  ) {
    this.#o = { ...DEFAULTS, randomBytes: random, ...options }
    this.#decoder = new FrameDecoder(this.#o.maxFrameBytes + 64)
    this.established = new Promise((resolve, reject) => (this.#established = { resolve, reject }))
    this.established.catch(() => {}) // observed through close listeners too
    const hs = { identity: options.identity, serial: options.serial, clusterId: options.clusterId, authorize: options.authorize, randomBytes: this.#o.randomBytes }
    if (role === 'initiator') this.#initiator = new InitiatorHandshake(hs)
    else this.#responder = new ResponderHandshake(hs)
  }

  get closed(): boolean {
    return this.#closed
  }

  onFrame(listener: (f: LinkFrame) => void): void {
    this.#frameListeners.push(listener)
  }

  onClose(listener: (reason: LinkError | null) => void): void {
    if (this.#closed) listener(this.stats.closeReason)
    else this.#closeListeners.push(listener)
  }

  /** Sends one sealed frame. Throws at once when the link is closed (callers get an error, never a hang). */
  send(type: FrameTypeCode, payload: Uint8Array, header: { stage?: number; requestId?: bigint } = {}): void {
    if (this.#closed) throw this.stats.closeReason ?? new LinkError('E_LINK_CLOSED', `the link to ${this.peerSerial || 'the peer'} is closed`)
    if (!this.#sender) throw new LinkError('E_LINK_NOT_READY', 'the handshake has not finished')
    if (payload.byteLength > this.#o.maxFrameBytes) throw new LinkError('E_FRAME_TOO_LARGE', `payload of ${payload.byteLength} bytes exceeds ${this.#o.maxFrameBytes}`)
    this.stats.sent++
    this.#write(this.#sender.sealFrame({ type, stage: header.stage ?? 0, requestId: header.requestId ?? 0n }, payload))
  }

  close(reason: LinkError | null = null): void {
    if (this.#closed) return
    this.#closed = true
    this.stats.closeReason = reason
    if (reason) log.warn(`link ${this.peerSerial || '(handshaking)'} closed: ${reason.message}`)
    if (this.#pingTimer) clearInterval(this.#pingTimer)
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer)
    this.#socket?.end()
    this.#established.reject(reason ?? new LinkError('E_LINK_CLOSED', 'the link closed during the handshake'))
    for (const l of this.#closeListeners.splice(0)) l(reason)
  }

  // ---- socket plumbing (called from the Bun socket handlers) ----

  attach(socket: Socket<SocketData>): void {
    this.#socket = socket
    this.#handshakeTimer = setTimeout(
      () => this.close(new TrustError('E_HANDSHAKE_TIMEOUT', `the handshake did not finish within ${this.#o.handshakeTimeoutMs} ms`, 'is the peer a dbcluster node of the same release?')),
      this.#o.handshakeTimeoutMs,
    )
    if (this.#initiator) this.#write(encodeFrame(FrameType.hello, this.#initiator.hello()))
  }

  data(chunk: Uint8Array): void {
    if (this.#closed) return
    let frames: RawFrame[]
    try {
      frames = this.#decoder.push(chunk)
    } catch (error) {
      return this.close(error as LinkError)
    }
    if (this.#receiver && !this.#chainBusy) {
      // established and nothing queued behind an async handshake step: handle in place, no promise hops per frame
      for (const f of frames) {
        if (this.#closed) return
        try {
          this.#handleSealed(f)
        } catch (error) {
          return this.close(error instanceof LinkError ? error : new LinkError('E_LINK', (error as Error).message))
        }
      }
      return
    }
    // handled later (after an async handshake step): own the bytes, the socket may reuse its buffer
    void this.#handleAll(frames.map((f) => ({ type: f.type, body: f.body.slice() })))
  }

  drain(): void {
    this.#flush()
  }

  #chain: Promise<void> = Promise.resolve()
  #chainBusy = 0
  /** Frames are handled strictly in order, even though the handshake steps are async. */
  #handleAll(frames: RawFrame[]): Promise<void> {
    this.#chainBusy++
    this.#chain = this.#chain.then(async () => {
      for (const f of frames) {
        if (this.#closed) return
        try {
          await this.#handle(f)
        } catch (error) {
          if (!this.#sender && (error as { code?: string }).code) {
            // tell the peer why before closing, so its operator sees the reason too
            try {
              this.#write(encodeFrame(FrameType.error, new TextEncoder().encode(`${(error as TrustError).code}: ${(error as Error).message}`)))
            } catch {}
          }
          this.close(error instanceof LinkError || error instanceof TrustError ? (error as LinkError) : new LinkError('E_LINK', (error as Error).message))
          return
        }
      }
    }).finally(() => this.#chainBusy--)
    return this.#chain
  }

  async #handle(f: RawFrame): Promise<void> {
    if (!this.#receiver) {
      if (f.type === FrameType.error) {
        const text = new TextDecoder().decode(f.body)
        const code = /^(E_[A-Z_]+):/.exec(text)?.[1] ?? 'E_PEER_REFUSED'
        throw new TrustError(code, `the peer refused the handshake: ${text}`)
      }
      if (!isHandshakeFrame(f.type)) throw new LinkError('E_FRAME_UNEXPECTED', `frame '${frameTypeName(f.type)}' before the handshake finished`)
      if (this.#responder && f.type === FrameType.hello) return this.#write(encodeFrame(FrameType.ack, await this.#responder.receiveHello(f.body)))
      if (this.#responder && f.type === FrameType.finish) return this.#establish(this.#responder.receiveFinish(f.body))
      if (this.#initiator && f.type === FrameType.ack) {
        const { finish, result } = await this.#initiator.receiveAck(f.body)
        this.#write(encodeFrame(FrameType.finish, finish))
        return this.#establish(result)
      }
      throw new LinkError('E_FRAME_UNEXPECTED', `handshake frame '${frameTypeName(f.type)}' out of turn`)
    }
    this.#handleSealed(f)
  }

  #handleSealed(f: RawFrame): void {
    if (isHandshakeFrame(f.type)) throw new LinkError('E_FRAME_UNEXPECTED', `handshake frame '${frameTypeName(f.type)}' on an established link`)
    const { header, plaintext } = this.#receiver!.open(f.type, f.body)
    this.stats.received++
    if (f.type === FrameType.ping) return this.send(FrameType.pong, plaintext)
    if (f.type === FrameType.pong) {
      this.#lastPong = Date.now()
      return
    }
    const frame: LinkFrame = { type: f.type as FrameTypeCode, stage: header.stage, requestId: header.requestId, payload: plaintext }
    for (const l of this.#frameListeners) l(frame)
  }

  #establish(result: HandshakeResult): void {
    this.peerSerial = result.peerSerial
    this.peerPublicKey = result.peerPublicKey
    const mine = this.role === 'initiator' ? 1 : 2
    const theirs = this.role === 'initiator' ? 2 : 1
    const common = { cipher: this.#o.cipher, clusterId: this.#o.clusterId, rekeyInterval: this.#o.rekeyInterval }
    this.#sender = new AeadSender({ ...common, direction: mine, key: mine === 1 ? result.initiatorKey : result.responderKey })
    this.#receiver = new AeadReceiver({ ...common, direction: theirs, key: theirs === 1 ? result.initiatorKey : result.responderKey })
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer)
    this.#lastPong = Date.now()
    this.#pingTimer = setInterval(() => this.#ping(), this.#o.pingIntervalMs)
    log.debug(`link to ${this.peerSerial} established (${this.#o.cipher})`)
    this.#established.resolve(this)
  }

  #ping(): void {
    if (Date.now() - this.#lastPong > this.#o.pingIntervalMs * this.#o.missedPings) {
      return this.close(new LinkError('E_PEER_UNAVAILABLE', `${this.peerSerial} missed ${this.#o.missedPings} pings`, 'the link reconnects when the peer returns'))
    }
    try {
      const now = new Uint8Array(8)
      new DataView(now.buffer).setBigUint64(0, BigInt(Date.now()), true)
      this.send(FrameType.ping, now)
    } catch {}
  }

  #write(bytes: Uint8Array): void {
    this.#queue.push(bytes)
    this.#flush()
  }

  #flush(): void {
    const socket = this.#socket
    if (!socket) return
    while (this.#queue.length) {
      const head = this.#queue[0]!
      const written = socket.write(head)
      if (written < 0) return this.close(new LinkError('E_SOCKET', 'the socket refused a write'))
      if (written < head.byteLength) {
        this.#queue[0] = head.subarray(written)
        return // wait for drain
      }
      this.#queue.shift()
    }
  }
}

const handlers = {
  open(socket: Socket<SocketData>) {
    socket.data.link.attach(socket)
  },
  data(socket: Socket<SocketData>, chunk: Buffer) {
    socket.data.link.data(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))
  },
  drain(socket: Socket<SocketData>) {
    socket.data.link.drain()
  },
  close(socket: Socket<SocketData>) {
    const link = socket.data.link
    if (!link.closed) link.close(new LinkError('E_PEER_CLOSED', `${link.peerSerial || 'the peer'} closed the connection`))
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
    throw new LinkError('E_CONNECT', `cannot reach ${host}:${port}: ${(error as Error).message}`, 'is the peer running and is the address right?')
  }
  return link.established
}

/** Accepts links; each is handed to onLink once its handshake succeeded (refused peers are closed and logged). */
export function listenLinks(host: string, port: number, options: LinkOptions, onLink: (link: SealedLink) => void): TCPSocketListener<SocketData> {
  return Bun.listen<SocketData>({
    hostname: host,
    port,
    socket: {
      ...handlers,
      open(socket) {
        const link = new SealedLink('responder', options)
        socket.data = { link }
        link.attach(socket)
        link.established.then(onLink, () => {})
      },
    },
  })
}
