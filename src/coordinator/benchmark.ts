/** Load on a real coordinator (Bun server, SQLite file, loopback sockets): registration throughput and peer-list / peer-key latency samples. */
import { p256 } from '@noble/curves/nist.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { signAttestation, verifyAttestation, type SignedAttestation } from '../trust/attestation.ts'
import type { Identity } from '../trust/identity.ts'
import type { CoordinatorEvent } from './provider-messages.ts'
import { startCoordinator } from './run-coordinator.ts'
import { signerFromSecret } from './signing-key.ts'
import { generateToken, hashToken } from './tokens.ts'

export interface CoordinatorBenchOptions {
  providers: number
  /** Providers per account (the rest of the accounts' machines are everyone else's peers). */
  providersPerAccount: number
  /** Registrations in flight at once. */
  concurrency: number
  peerListQueries: number
  peerKeyQueries: number
  onProgress?: (line: string) => void
}

export interface CoordinatorBenchSamples {
  providers: number
  accounts: number
  registration: { seconds: number; perSecond: number; concurrency: number }
  /** Seconds spent signing the attestations beforehand (client work, not counted above). */
  signingSeconds: number
  peersReturned: number
  peerListMs: number[]
  peerKeyMs: number[]
  /** Reference: GET /health round trips (no auth, no query): the floor any endpoint's latency sits on. */
  healthMs: number[]
  /** Reference: attestation verifications per second on one thread, in process: the ceiling for registrations. */
  verifyPerSecond: number
}

const BunWebSocket = WebSocket as unknown as new (
  url: string,
  options: { headers: Record<string, string> },
) => WebSocket

/** One provider's registration as a real one runs it: the coordinator's challenge first, then an attestation signing it. */
function registerOne(
  url: string,
  token: string,
  attest: (challenge: string) => Promise<SignedAttestation>,
): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new BunWebSocket(`${url.replace(/^http/, 'ws')}/v1/provider/ws`, {
      headers: { authorization: `Bearer ${token}` },
    })
    ws.onmessage = async (m) => {
      const event = JSON.parse(String(m.data)) as CoordinatorEvent
      if (event.type === 'challenge')
        ws.send(JSON.stringify({ type: 'register', rdma_enabled: true, attestation: await attest(event.nonce) }))
      else if (event.type === 'registered' && event.attested) resolve(ws)
      else reject(new Error(`registration failed: ${String(m.data)}`))
    }
    ws.onerror = () => reject(new Error('socket error'))
  })
}

async function timeRequests(count: number, request: (i: number) => Promise<Response>): Promise<number[]> {
  const samples: number[] = []
  for (let i = -Math.min(50, count); i < count; i++) {
    const t0 = Bun.nanoseconds()
    const r = await request(i)
    await r.arrayBuffer()
    if (!r.ok) throw new Error(`request failed with ${r.status}`)
    if (i >= 0) samples.push((Bun.nanoseconds() - t0) / 1e6)
  }
  return samples
}

export async function runCoordinatorBench(o: CoordinatorBenchOptions): Promise<CoordinatorBenchSamples> {
  const dir = mkdtempSync(join(tmpdir(), 'dbc-bench-coordinator-'))
  const running = startCoordinator({
    dbPath: join(dir, 'coordinator.db'),
    signer: signerFromSecret(p256.utils.randomSecretKey()),
    host: '127.0.0.1',
    port: 0,
    offlineAfterMs: 3600_000,
    attestationMaxAgeMs: 3600_000,
    log: { info: () => {}, warn: (m) => o.onProgress?.(`warning: ${m}`) },
  })
  const sockets: WebSocket[] = []
  try {
    const accounts = Math.ceil(o.providers / o.providersPerAccount)
    const tokens = Array.from({ length: accounts }, (_, a) => {
      const token = generateToken()
      running.store.addToken(running.store.ensureAccount(`bench-${a}`, Date.now()).id, hashToken(token), Date.now())
      return token
    })
    o.onProgress?.(`signing ${o.providers} attestations`)
    const t0 = Bun.nanoseconds()
    const attesters = Array.from({ length: o.providers }, (_, i) => {
      const secret = p256.utils.randomSecretKey()
      const id: Identity = {
        kind: i % 2 ? 'software' : 'secure-enclave',
        publicKey: p256.getPublicKey(secret, true),
        sign: async (m) => p256.sign(m, secret),
      }
      return (challenge?: string) =>
        signAttestation(id, {
          serial: `BENCH-${String(i).padStart(5, '0')}`,
          hostname: `node-${i}`,
          chip: 'Apple M5',
          memoryBytes: 2 ** 36,
          osVersion: '26.1',
          binaryHash: 'cd'.repeat(32),
          rdmaEnabled: true,
          challenge,
        })
    })
    const attestations = await Promise.all(attesters.map((attest) => attest()))
    const signingSeconds = (Bun.nanoseconds() - t0) / 1e9
    const tv = Bun.nanoseconds()
    const verifyCount = Math.min(200, o.providers)
    for (let i = 0; i < verifyCount; i++)
      if (!verifyAttestation(attestations[i]).ok) throw new Error('attestation does not verify')
    const verifyPerSecond = verifyCount / ((Bun.nanoseconds() - tv) / 1e9)

    o.onProgress?.(`registering ${o.providers} providers over WebSocket, ${o.concurrency} at a time`)
    let next = 0
    const t1 = Bun.nanoseconds()
    await Promise.all(
      Array.from({ length: o.concurrency }, async () => {
        for (let i = next++; i < o.providers; i = next++)
          sockets.push(await registerOne(running.url, tokens[Math.floor(i / o.providersPerAccount)]!, attesters[i]!))
      }),
    )
    const registrationSeconds = (Bun.nanoseconds() - t1) / 1e9

    const auth = { headers: { authorization: `Bearer ${tokens[0]}` } }
    const probe = (await (await fetch(`${running.url}/v1/cluster/rdma-peers`, auth)).json()) as { peers: unknown[] }
    o.onProgress?.(`peer list: ${o.peerListQueries} queries (${probe.peers.length} peers each)`)
    const peerListMs = await timeRequests(o.peerListQueries, () => fetch(`${running.url}/v1/cluster/rdma-peers`, auth))
    o.onProgress?.(`peer key: ${o.peerKeyQueries} queries`)
    // each lookup with the token of the serial's own account (another account's serial answers 404)
    const peerKeyMs = await timeRequests(o.peerKeyQueries, (i) => {
      const n = Math.abs(i * 7919) % o.providers
      return fetch(`${running.url}/v1/cluster/peer-key?serial=BENCH-${String(n).padStart(5, '0')}`, {
        headers: { authorization: `Bearer ${tokens[Math.floor(n / o.providersPerAccount)]}` },
      })
    })
    const healthMs = await timeRequests(o.peerKeyQueries, () => fetch(`${running.url}/health`))
    return {
      providers: o.providers,
      accounts,
      registration: {
        seconds: registrationSeconds,
        perSecond: o.providers / registrationSeconds,
        concurrency: o.concurrency,
      },
      signingSeconds,
      peersReturned: probe.peers.length,
      peerListMs,
      peerKeyMs,
      healthMs,
      verifyPerSecond,
    }
  } finally {
    for (const ws of sockets) ws.close()
    await running.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
