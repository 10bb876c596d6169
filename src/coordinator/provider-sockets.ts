/** The provider WebSocket endpoint's sessions: registration, heartbeats, and offline marking when a socket closes or goes silent. */
import type { ServerWebSocket, WebSocketHandler } from 'bun'
import { randomBytes, type X509Certificate } from 'node:crypto'
import { assertNever } from '../errors.ts'
import type { Identity } from '../trust/identity.ts'
import { decideClusterRegistration } from './cluster-registration.ts'
import { CoordinatorError } from './errors.ts'
import { CLOSE_REPLACED, type CoordinatorEvent, type ProviderCommand } from './provider-messages.ts'
import { decideRegistration } from './registration.ts'
import { LIMITS, parseProviderCommand } from './schemas.ts'
import type { CoordinatorStore } from './store.ts'

export interface SocketData {
  accountId: number
  accountName: string
  /** The nonce sent when the socket opened; this connection's attestation must sign it. */
  challenge?: string
  /** Set once this socket has registered a provider. */
  serial?: string
}

export interface Log {
  info(message: string): void
  warn(message: string): void
}

export interface ProviderSocketsDeps {
  store: CoordinatorStore
  signer: Identity
  now: () => number
  log: Log
  attestationMaxAgeMs: number
  /** Trust anchors for managed device attestation (Apple's root unless the operator names others). */
  mdaRoots: readonly X509Certificate[]
}

type Socket = ServerWebSocket<SocketData>

export class ProviderSockets {
  readonly #active = new Map<string, Socket>()
  #stopping = false
  constructor(private readonly deps: ProviderSocketsDeps) {}

  get connected(): number {
    return this.#active.size
  }

  readonly websocket: WebSocketHandler<SocketData> = {
    maxPayloadLength: LIMITS.socketMessageBytes,
    // Heartbeats decide liveness; Bun's own idle timeout only reaps sockets silent for far longer.
    idleTimeout: 960,
    sendPings: true,
    open: (ws) => {
      ws.data.challenge = randomBytes(32).toString('base64')
      this.#send(ws, { type: 'challenge', nonce: ws.data.challenge })
    },
    message: (ws, message) => this.#onMessage(ws, typeof message === 'string' ? message : message.toString('utf8')),
    close: (ws) => this.#onClose(ws),
  }

  #send(ws: Socket, event: CoordinatorEvent): void {
    ws.send(JSON.stringify(event))
  }

  #onMessage(ws: Socket, text: string): void {
    let command: ProviderCommand
    try {
      command = parseProviderCommand(text)
    } catch (error) {
      const e = error instanceof CoordinatorError ? error : new CoordinatorError('E_MALFORMED', String(error))
      return this.#send(ws, { type: 'error', code: e.code, message: e.message })
    }
    switch (command.type) {
      case 'heartbeat': {
        const serial = ws.data.serial
        if (!serial)
          return this.#send(ws, { type: 'error', code: 'E_INVALID', message: 'register before sending heartbeats' })
        const status = this.deps.store.touch(serial, this.deps.now())
        if (status) this.#send(ws, { type: 'heartbeat_acknowledged', status })
        return
      }
      case 'register':
      case 'register_cluster':
        return this.#register(ws, command)
      default:
        assertNever(command, 'provider command')
    }
  }

  #register(ws: Socket, command: Exclude<ProviderCommand, { type: 'heartbeat' }>): void {
    const { store, now, log } = this.deps
    const lookup = (serial: string) => store.getProvider(serial)
    const common = { accountId: ws.data.accountId, lookup, now: now(), maxAgeMs: this.deps.attestationMaxAgeMs }
    const decision =
      command.type === 'register'
        ? decideRegistration({ ...common, command, challenge: ws.data.challenge, mdaRoots: this.deps.mdaRoots })
        : decideClusterRegistration({ ...common, command, coordinatorKey: this.deps.signer.publicKey })
    if (!decision.accepted) {
      log.warn(`registration from account ${ws.data.accountName} refused: ${decision.message}`)
      return this.#send(ws, { type: 'error', code: decision.code, message: decision.message })
    }
    const serial = decision.record.serial
    if (ws.data.serial && ws.data.serial !== serial) {
      return this.#send(ws, {
        type: 'error',
        code: 'E_INVALID',
        message: `this connection already registered ${ws.data.serial}; open another for ${serial}`,
      })
    }
    store.putProvider(decision.record)
    for (const w of decision.warnings) log.warn(w)
    const previous = this.#active.get(serial)
    ws.data.serial = serial
    this.#active.set(serial, ws)
    if (previous && previous !== ws) previous.close(CLOSE_REPLACED, 'registered again on a newer connection')
    log.info(
      `${decision.record.kind} ${serial} registered by ${ws.data.accountName}: ${decision.reply.status}, trust ${decision.reply.trust_level}, rdma ${decision.reply.rdma_enabled}`,
    )
    this.#send(ws, decision.reply)
  }

  #onClose(ws: Socket): void {
    const serial = ws.data.serial
    if (this.#stopping || !serial || this.#active.get(serial) !== ws) return
    this.#active.delete(serial)
    this.deps.store.markOffline(serial, 'connection closed')
    this.deps.log.info(`${serial} disconnected: offline`)
  }

  /** Marks providers silent for longer than offlineAfterMs offline; returns their serials. */
  sweep(offlineAfterMs: number): string[] {
    const silent = this.deps.store.markSilentOffline(
      this.deps.now() - offlineAfterMs,
      `no heartbeat for ${Math.round(offlineAfterMs / 1000)} s`,
    )
    for (const serial of silent) this.deps.log.info(`${serial} silent: offline`)
    return silent
  }

  /** Shutdown: closes every provider socket (1001 going away); the caller then marks them all offline in one write. */
  closeAll(): void {
    this.#stopping = true
    for (const ws of [...this.#active.values()]) ws.close(1001, 'coordinator shutting down')
    this.#active.clear()
  }
}
