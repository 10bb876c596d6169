/** Runs the coordinator: opens the store and signing key, serves the app and provider sockets on Bun, sweeps silent providers, and stops without losing a write. */
import { bytesToHex } from '@noble/hashes/utils.js'
import type { X509Certificate } from 'node:crypto'
import type { Identity } from '../trust/identity.ts'
import { mdaRoots } from '../trust/mda.ts'
import { ProviderSockets, type Log, type SocketData } from './provider-sockets.ts'
import { createCoordinatorApp } from './server.ts'
import { loadOrCreateSigningKey } from './signing-key.ts'
import { CoordinatorStore } from './store.ts'

export interface CoordinatorOptions {
  dbPath: string
  /** Default: `<db>.key` beside the database. */
  keyPath?: string
  /** An in-memory signer instead of a key file (benchmarks). */
  signer?: Identity
  host: string
  port: number
  /** A provider not heard from for this long goes offline. */
  offlineAfterMs: number
  /** How old an attestation may be when it arrives. */
  attestationMaxAgeMs: number
  log: Log
  now?: () => number
  /** Trust anchors for Apple managed device attestation chains (default: Apple's Enterprise Attestation Root CA). */
  mdaRoots?: readonly X509Certificate[]
}

export interface RunningCoordinator {
  url: string
  hostname: string
  port: number
  signer: Identity
  keyCreated: boolean
  keyPath: string | undefined
  store: CoordinatorStore
  /** Stops listening, closes provider sockets, marks their providers offline, checkpoints and closes the database. */
  stop(): Promise<void>
}

export function startCoordinator(options: CoordinatorOptions): RunningCoordinator {
  const now = options.now ?? Date.now
  const keyPath = options.signer ? undefined : (options.keyPath ?? `${options.dbPath}.key`)
  const { signer, created } = options.signer
    ? { signer: options.signer, created: false }
    : loadOrCreateSigningKey(keyPath!)
  const store = new CoordinatorStore(options.dbPath)
  // No socket survives a restart: whoever was online reconnects and registers again.
  store.markAllOffline('coordinator restarted')
  const roots = options.mdaRoots ?? mdaRoots()
  const sockets = new ProviderSockets({
    store,
    signer,
    now,
    log: options.log,
    attestationMaxAgeMs: options.attestationMaxAgeMs,
    mdaRoots: roots,
  })
  const app = createCoordinatorApp({
    mdaRoots: roots,
    store,
    signer,
    now,
    log: options.log,
    attestationMaxAgeMs: options.attestationMaxAgeMs,
    randomId: () => `c-${bytesToHex(crypto.getRandomValues(new Uint8Array(8)))}`,
    connected: () => sockets.connected,
  })
  const server = Bun.serve<SocketData>({
    hostname: options.host,
    port: options.port,
    fetch: (req, srv) => app.fetch(req, { upgrade: (data: SocketData) => srv.upgrade(req, { data }) }),
    websocket: sockets.websocket,
  })
  const sweeper = setInterval(
    () => sockets.sweep(options.offlineAfterMs),
    Math.max(50, Math.min(1000, options.offlineAfterMs / 4)),
  )
  let stopped: Promise<void> | undefined
  const hostname = server.hostname ?? options.host
  const port = server.port ?? options.port
  return {
    url: `http://${hostname.includes(':') ? `[${hostname}]` : hostname}:${port}`,
    hostname,
    port,
    signer,
    keyCreated: created,
    keyPath,
    store,
    stop() {
      stopped ??= (async () => {
        clearInterval(sweeper)
        sockets.closeAll()
        // Let in-flight requests finish (their writes are single transactions), but do not wait forever on idle connections.
        await Promise.race([server.stop(false), Bun.sleep(3000)])
        await server.stop(true)
        store.markAllOffline('coordinator stopped')
        store.close()
      })()
      return stopped
    },
  }
}
