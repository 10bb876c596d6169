/** A client link that stays up: connects, reports the peer unavailable when the link drops (missed pings, closed socket,
 * failed frame, refused handshake), retries three times at once with a short backoff (a blip on the cable), then every
 * `backoffMs`, each time with a fresh handshake and fresh keys. While down,
 * send() throws at once and every pending nextFrame() rejects: callers get an error, never a hang. */
import { consola } from 'consola'
import { LinkError } from './errors.ts'
import type { FrameTypeCode } from './frames.ts'
import { connectLink, type LinkFrame, type LinkOptions, type SealedLink } from './tcp-link.ts'

const log = consola.withTag('link')

export type LinkState = { state: 'connected'; link: SealedLink } | { state: 'unavailable'; reason: string }

/** The events the cluster layer listens to. `unavailable` fires once per outage, not once per failed retry. */
export interface LinkEvents {
  connected: (link: SealedLink) => void
  unavailable: (reason: string) => void
  frame: (frame: LinkFrame) => void
}

export interface ReconnectOptions extends LinkOptions {
  /** Wait between attempts once the quick retries have failed, in ms (default 10,000). */
  backoffMs?: number
}

/** The quick retries after a drop, in ms. */
export const QUICK_RETRIES_MS = [100, 300, 900] as const

export class ReconnectingLink {
  #link: SealedLink | null = null
  #stopped = true
  #timer: ReturnType<typeof setTimeout> | null = null
  #up = false
  #lastReason = 'not connected yet'
  #failures = 0
  readonly #listeners: { [K in keyof LinkEvents]: LinkEvents[K][] } = { connected: [], unavailable: [], frame: [] }

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly options: ReconnectOptions,
  ) {}

  get link(): SealedLink | null {
    return this.#link
  }

  get available(): boolean {
    return this.#link !== null && !this.#link.closed
  }

  on<K extends keyof LinkEvents>(event: K, listener: LinkEvents[K]): () => void {
    const list = this.#listeners[event] as LinkEvents[K][]
    list.push(listener)
    return () => {
      const at = list.indexOf(listener)
      if (at >= 0) list.splice(at, 1)
    }
  }

  /** Both state events as one stream. */
  onState(listener: (s: LinkState) => void): void {
    this.on('connected', (link) => listener({ state: 'connected', link }))
    this.on('unavailable', (reason) => listener({ state: 'unavailable', reason }))
  }

  onFrame(listener: (f: LinkFrame) => void): () => void {
    return this.on('frame', listener)
  }

  start(): void {
    if (!this.#stopped) return
    this.#stopped = false
    void this.#connect()
  }

  stop(): void {
    this.#stopped = true
    if (this.#timer) clearTimeout(this.#timer)
    this.#link?.close()
    this.#link = null
  }

  send(type: FrameTypeCode, payload: Uint8Array, header: { stage?: number; requestId?: bigint } = {}): void {
    this.#current().send(type, payload, header)
  }

  /** The next matching frame on the current connection; rejects as soon as the peer becomes unavailable. */
  nextFrame(match?: (f: LinkFrame) => boolean, timeoutMs?: number): Promise<LinkFrame> {
    try {
      return this.#current().nextFrame(match, timeoutMs)
    } catch (error) {
      return Promise.reject(error)
    }
  }

  #current(): SealedLink {
    if (!this.#link || this.#link.closed) {
      throw new LinkError(
        'E_PEER_UNAVAILABLE',
        `${this.host}:${this.port} is unavailable: ${this.#lastReason}`,
        'the link reconnects by itself when the peer returns',
      )
    }
    return this.#link
  }

  async #connect(): Promise<void> {
    this.#timer = null
    if (this.#stopped) return
    let link: SealedLink
    try {
      link = await connectLink(this.host, this.port, this.options)
    } catch (error) {
      return this.#down((error as Error).message)
    }
    if (this.#stopped) return link.close()
    this.#link = link
    this.#up = true
    this.#failures = 0
    link.onFrame((f) => this.#listeners.frame.forEach((l) => l(f)))
    link.onClose((reason) => {
      if (this.#link === link) this.#link = null
      this.#down(reason ? `${reason.code}: ${reason.message}` : 'closed')
    })
    log.info(`link to ${link.peerSerial} at ${this.host}:${this.port} is up`)
    this.#listeners.connected.forEach((l) => l(link))
  }

  #down(reason: string): void {
    const wasUp = this.#up || this.#lastReason === 'not connected yet'
    this.#up = false
    this.#lastReason = reason
    if (this.#stopped) return
    if (wasUp) {
      log.warn(`${this.host}:${this.port} unavailable: ${reason}`)
      this.#listeners.unavailable.forEach((l) => l(reason))
    } else log.debug(`reconnect to ${this.host}:${this.port} failed: ${reason}`)
    if (this.#timer) return
    const backoff = this.options.backoffMs ?? 10_000
    const delay = Math.min(backoff, QUICK_RETRIES_MS[this.#failures++] ?? backoff)
    this.#timer = setTimeout(() => void this.#connect(), delay)
  }
}
