/** A provider's socket to the coordinator, client side: register with a fresh message per connection, heartbeat, reconnect with backoff, report each change. */
import { CoordinatorError } from './errors.ts'
import {
  CLOSE_REPLACED,
  type CoordinatorEvent,
  type Register,
  type RegisterCluster,
  type Registered,
} from './provider-messages.ts'
import { backoffDelay, DEFAULT_RETRY, type RetryPolicy } from './retry.ts'

export type ConnectionEvent =
  | { type: 'registered'; registration: Registered }
  | { type: 'heartbeat_acknowledged'; status: string }
  | { type: 'rejected'; code: string; message: string }
  | { type: 'disconnected'; code: number; reason: string }
  | { type: 'retrying'; attempt: number; delayMs: number; reason: string }

export interface ProviderConnectionOptions {
  url: string
  token: string
  /** Builds the registration for each (re)connection from the challenge the coordinator sent on it, so every one
   * carries a fresh attestation bound to that connection. */
  registration: (challenge: string) => Promise<Register | RegisterCluster>
  heartbeatMs: number
  /** Initial connection: `attempts` tries before `registered` rejects (reconnecting goes on in the background). */
  retry?: RetryPolicy
  sleep?: (ms: number) => Promise<void>
  onEvent?: (event: ConnectionEvent) => void
}

/** Bun's WebSocket takes request headers (the DOM typing does not know it): the token travels in Authorization, never in the URL. */
const BunWebSocket = WebSocket as unknown as new (
  url: string,
  options: { headers: Record<string, string> },
) => WebSocket

export type ConnectionState = 'connecting' | 'registered' | 'reconnecting' | 'rejected' | 'closed'

export class ProviderConnection {
  /** The first registration's answer; rejects if refused, or when the first `retry.attempts` connections all fail. */
  readonly registered: Promise<Registered>
  state: ConnectionState = 'connecting'
  last: Registered | undefined
  #ws: WebSocket | undefined
  #closed = false
  #wake: (() => void) | undefined
  readonly #o: ProviderConnectionOptions

  constructor(options: ProviderConnectionOptions) {
    this.#o = options
    this.registered = new Promise<Registered>((resolve, reject) => void this.#run(resolve, reject))
    this.registered.catch(() => {})
  }

  #emit(event: ConnectionEvent): void {
    this.#o.onEvent?.(event)
  }

  async #run(resolve: (r: Registered) => void, reject: (e: Error) => void): Promise<void> {
    const policy = this.#o.retry ?? DEFAULT_RETRY
    let failures = 0
    let settled = false
    while (!this.#closed) {
      let reason: string
      try {
        const outcome = await this.#session((r) => {
          failures = 0
          if (!settled) ((settled = true), resolve(r))
        })
        if (outcome.kind === 'rejected') {
          this.state = 'rejected'
          if (!settled)
            ((settled = true),
              reject(new CoordinatorError('E_REGISTRATION_REJECTED', `${outcome.code}: ${outcome.message}`)))
          return
        }
        if (outcome.kind === 'replaced' || this.#closed) break
        reason = `closed (${outcome.code}${outcome.reason ? `: ${outcome.reason}` : ''})`
      } catch (error) {
        reason = error instanceof Error ? error.message : String(error)
      }
      failures++
      if (!settled && failures >= policy.attempts) {
        settled = true
        reject(
          new CoordinatorError(
            'E_COORDINATOR_UNREACHABLE',
            `could not register with ${this.#o.url} after ${failures} tries: ${reason}`,
          ),
        )
      }
      if (this.#closed) break
      this.state = 'reconnecting'
      const delayMs = backoffDelay(failures - 1, policy)
      this.#emit({ type: 'retrying', attempt: failures, delayMs, reason })
      await Promise.race([(this.#o.sleep ?? Bun.sleep)(delayMs), new Promise<void>((w) => (this.#wake = w))])
    }
    this.state = 'closed'
    if (!settled) reject(new CoordinatorError('E_COORDINATOR_UNREACHABLE', 'connection closed before registering'))
  }

  /** One connection, from open to close. */
  #session(
    onRegistered: (r: Registered) => void,
  ): Promise<
    | { kind: 'closed'; code: number; reason: string }
    | { kind: 'replaced' }
    | { kind: 'rejected'; code: string; message: string }
  > {
    const wsUrl = `${this.#o.url.replace(/^http/, 'ws')}/v1/provider/ws`
    return new Promise((resolve, reject) => {
      const ws = new BunWebSocket(wsUrl, { headers: { authorization: `Bearer ${this.#o.token}` } })
      this.#ws = ws
      let opened = false
      let heartbeat: ReturnType<typeof setInterval> | undefined
      let registeredOnce = false
      ws.onopen = () => (opened = true)
      ws.onmessage = async (m) => {
        let event: CoordinatorEvent
        try {
          event = JSON.parse(String(m.data)) as CoordinatorEvent
        } catch {
          return ws.close(1002, 'coordinator sent a message that is not JSON')
        }
        switch (event.type) {
          case 'challenge':
            try {
              ws.send(JSON.stringify(await this.#o.registration(event.nonce)))
            } catch (error) {
              ws.close(1011, 'could not build the registration')
              reject(error)
            }
            return
          case 'registered':
            this.last = event
            this.state = 'registered'
            this.#emit({ type: 'registered', registration: event })
            if (!registeredOnce) {
              registeredOnce = true
              heartbeat = setInterval(
                () => ws.readyState === WebSocket.OPEN && ws.send('{"type":"heartbeat"}'),
                this.#o.heartbeatMs,
              )
              onRegistered(event)
            }
            return
          case 'heartbeat_acknowledged':
            this.#emit({ type: 'heartbeat_acknowledged', status: event.status })
            return
          case 'error':
            this.#emit({ type: 'rejected', code: event.code, message: event.message })
            if (!registeredOnce) {
              ws.close(1000, 'registration refused')
              resolve({ kind: 'rejected', code: event.code, message: event.message })
            }
            return
        }
      }
      ws.onclose = (e) => {
        clearInterval(heartbeat)
        this.#emit({ type: 'disconnected', code: e.code, reason: e.reason })
        if (!opened) return reject(new Error(`cannot connect to ${wsUrl} (${e.code})`))
        resolve(e.code === CLOSE_REPLACED ? { kind: 'replaced' } : { kind: 'closed', code: e.code, reason: e.reason })
      }
    })
  }

  /** Sends one message on the open socket (tests use it to send what a well-behaved client never would). */
  sendRaw(text: string): void {
    this.#ws?.send(text)
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#wake?.()
    const ws = this.#ws
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise<void>((done) => ws.addEventListener('close', () => done(), { once: true }))
      ws.close(1000, 'provider stopping')
      await Promise.race([closed, Bun.sleep(2000)])
    }
  }
}
