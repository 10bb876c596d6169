/** Test helpers: a real `dbcluster coordinator` process, tokens made by the CLI, in-process P-256 identities and attestations, raw sockets. */
import { p256 } from '@noble/curves/nist.js'
import type { Subprocess } from 'bun'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { signAttestation, type SignedAttestation } from '../../src/trust/attestation.ts'
import type { Identity, KeyKind } from '../../src/trust/identity.ts'

const ROOT = new URL('../..', import.meta.url).pathname

export const tempDir = () => mkdtempSync(join(tmpdir(), 'dbc-coordinator-'))

export interface CoordinatorProcess {
  url: string
  proc: Subprocess<'ignore', 'pipe', 'pipe'>
  /** Everything printed so far, stdout and stderr. */
  output(): string
  /** Sends a signal and waits for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number>
}

async function drain(stream: ReadableStream<Uint8Array>, sink: (text: string) => void): Promise<void> {
  const decoder = new TextDecoder()
  const reader = stream.getReader()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    sink(decoder.decode(value, { stream: true }))
  }
}

export async function startCoordinator(db: string, args: string[] = [], port = 0): Promise<CoordinatorProcess> {
  const proc = Bun.spawn(
    [process.execPath, 'src/main.ts', 'coordinator', '--port', String(port), '--db', db, ...args],
    {
      cwd: ROOT,
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'pipe',
      env: { ...process.env, NO_COLOR: '1', NODE_ENV: 'development' },
    },
  )
  let text = ''
  void drain(proc.stdout, (t) => (text += t))
  void drain(proc.stderr, (t) => (text += t))
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline) {
    const m = /listening on (http:\/\/\S+)\n/.exec(text)
    if (m) {
      return {
        url: m[1]!,
        proc,
        output: () => text,
        async stop(signal = 'SIGTERM') {
          proc.kill(signal)
          return proc.exited
        },
      }
    }
    if (proc.exitCode !== null) break
    await Bun.sleep(20)
  }
  proc.kill()
  throw new Error(`coordinator did not start: ${text}`)
}

/** `dbcluster coordinator token create`, the way an operator runs it; the token is the last line. */
export async function createToken(db: string, account: string): Promise<string> {
  const proc = Bun.spawn(
    [process.execPath, 'src/main.ts', 'coordinator', 'token', 'create', '--account', account, '--db', db],
    { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' },
  )
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited])
  if (code !== 0) throw new Error(`token create failed (${code}): ${await new Response(proc.stderr).text()}`)
  return out.trim().split('\n').at(-1)!
}

/** A software P-256 identity from a seed byte; `kind` may claim the Secure Enclave (the signature math is the same). */
export function identity(seed: number, kind: KeyKind = 'software'): Identity {
  const secret = new Uint8Array(32).fill(seed)
  return { kind, publicKey: p256.getPublicKey(secret, true), sign: async (m) => p256.sign(m, secret) }
}

export const keyB64 = (id: Identity) => Buffer.from(id.publicKey).toString('base64')

export function attest(
  id: Identity,
  serial: string,
  rdmaEnabled: boolean,
  timestamp?: number,
  challenge?: string,
): Promise<SignedAttestation> {
  return signAttestation(id, {
    challenge,
    serial,
    hostname: `host-${serial}`,
    chip: 'Apple M5 Max',
    memoryBytes: 128 * 2 ** 30,
    osVersion: '26.1',
    binaryHash: 'ab'.repeat(32),
    rdmaEnabled,
    timestamp,
  })
}

/** An attestation signed for the socket it is sent on: register() calls it with that socket's challenge. */
export type Attester = (challenge: string) => Promise<SignedAttestation>

export const attester =
  (id: Identity, serial: string, rdmaEnabled: boolean, timestamp?: number): Attester =>
  (challenge) =>
    attest(id, serial, rdmaEnabled, timestamp, challenge)

/** A signed attestation whose body was changed afterwards: the signature no longer covers it. */
export async function forge(id: Identity, serial: string, rdmaEnabled: boolean): Promise<SignedAttestation> {
  const real = await attest(id, serial, !rdmaEnabled)
  return { body: { ...real.body, rdmaEnabled }, signature: real.signature }
}

export interface RawSocket {
  ws: WebSocket
  /** The nonce the coordinator sent first on this socket. */
  challenge: string
  /** The next JSON message from the coordinator. */
  next(): Promise<Record<string, unknown>>
  closed: Promise<{ code: number; reason: string }>
  send(value: unknown): void
}

const BunWebSocket = WebSocket as unknown as new (
  url: string,
  options: { headers: Record<string, string> },
) => WebSocket

export async function openSocket(url: string, token: string): Promise<RawSocket> {
  const ws = new BunWebSocket(`${url.replace(/^http/, 'ws')}/v1/provider/ws`, {
    headers: { authorization: `Bearer ${token}` },
  })
  const queue: Record<string, unknown>[] = []
  const waiters: ((m: Record<string, unknown>) => void)[] = []
  ws.onmessage = (m) => {
    const msg = JSON.parse(String(m.data)) as Record<string, unknown>
    const w = waiters.shift()
    if (w) w(msg)
    else queue.push(msg)
  }
  const closed = new Promise<{ code: number; reason: string }>(
    (r) => (ws.onclose = (e) => r({ code: e.code, reason: e.reason })),
  )
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve()
    ws.onerror = () => reject(new Error('socket failed to open'))
  })
  const next = (): Promise<Record<string, unknown>> => {
    const m = queue.shift()
    if (m) return Promise.resolve(m)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no message within 5 s')), 5000)
      waiters.push((msg) => (clearTimeout(timer), resolve(msg)))
    })
  }
  const first = await next()
  if (first.type !== 'challenge' || typeof first.nonce !== 'string')
    throw new Error(`expected the coordinator's challenge first, got ${JSON.stringify(first)}`)
  return {
    ws,
    challenge: first.nonce,
    closed,
    send: (value) => ws.send(typeof value === 'string' ? value : JSON.stringify(value)),
    next,
  }
}

/** Registers over a raw socket and returns the coordinator's answer; the socket stays open (the provider stays online). */
export async function register(
  url: string,
  token: string,
  message: Record<string, unknown>,
): Promise<{ socket: RawSocket; reply: Record<string, unknown> }> {
  const socket = await openSocket(url, token)
  const attestation = message.attestation
  socket.send({
    type: 'register',
    ...message,
    ...(typeof attestation === 'function' ? { attestation: await (attestation as Attester)(socket.challenge) } : {}),
  })
  return { socket, reply: await socket.next() }
}

/** Polls until check() holds (status changes driven by the coordinator's sweeper). */
export async function eventually(check: () => Promise<boolean>, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await Bun.sleep(50)
  }
  throw new Error('condition not reached in time')
}
