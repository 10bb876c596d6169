/** A client link that stays up: connects, reports the peer unavailable when the link drops (missed pings, closed socket,
 * failed frame), waits a backoff, and reconnects with a fresh handshake and fresh keys. While down, send() fails at once. */
import { consola } from 'consola'
import { LinkError } from './errors.ts'
import type { FrameTypeCode } from './frames.ts'
import { connectLink, type LinkFrame, type LinkOptions, type SealedLink } from './tcp-link.ts'

const log = consola.withTag('link')

export type LinkState = { state: 'connected'; link: SealedLink } | { state: 'unavailable'; reason: string }

export class ReconnectingLink {
  #link: SealedLink | null = null
  #stopped = false
  #timer: ReturnType<typeof setTimeout> | null = null
  #lastReason = 'not connected yet'
  readonly #stateListeners: ((s: LinkState) => void)[] = []
  readonly #frameListeners: ((f: LinkFrame) => void)[] = []

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly options: LinkOptions & { backoffMs?: number },
  ) {}

  get link(): SealedLink | null {
    return this.#link
  }

  onState(listener: (s: LinkState) => void): void {
    this.#stateListeners.push(listener)
  }

  onFrame(listener: (f: LinkFrame) => void): void {
    this.#frameListeners.push(listener)
  }

  start(): void {
    this.#stopped = false
    void this.#connect()
  }

  stop(): void {
    this.#stopped = true
    if (this.#timer) clearTimeout(this.#timer)
    this.#link?.close()
  }

  send(type: FrameTypeCode, payload: Uint8Array, header: { stage?: number; requestId?: bigint } = {}): void {
    if (!this.#link || this.#link.closed) {
      throw new LinkError('E_PEER_UNAVAILABLE', `${this.host}:${this.port} is unavailable: ${this.#lastReason}`, 'the link reconnects by itself when the peer returns')
    }
    this.#link.send(type, payload, header)
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return
    try {
      const link = await connectLink(this.host, this.port, this.options)
      if (this.#stopped) return link.close()
      this.#link = link
      link.onFrame((f) => this.#frameListeners.forEach((l) => l(f)))
      link.onClose((reason) => {
        if (this.#link === link) this.#link = null
        this.#down(reason?.message ?? 'closed')
      })
      log.info(`link to ${link.peerSerial} at ${this.host}:${this.port} is up`)
      this.#stateListeners.forEach((l) => l({ state: 'connected', link }))
    } catch (error) {
      this.#down((error as Error).message)
    }
  }

  #down(reason: string): void {
    this.#lastReason = reason
    this.#stateListeners.forEach((l) => l({ state: 'unavailable', reason }))
    if (this.#stopped) return
    this.#timer = setTimeout(() => void this.#connect(), this.options.backoffMs ?? 10_000)
  }
}
