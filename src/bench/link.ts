/** `bench link`: round trips between two processes on loopback over the sealed link and over the same framing without
 * sealing, in the same run, plus in-process seal/open GB/s per cipher. */
import { p256 } from '@noble/curves/nist.js'
import { equalBytes } from '@noble/ciphers/utils.js'
import type { Socket } from 'bun'
import { open, seal, type CipherName } from '../link/aead-channel.ts'
import { FrameType } from '../link/frames.ts'
import { encodeFrame, FrameDecoder } from '../link/framing.ts'
import { connectLink, listenLinks } from '../link/tcp-link.ts'
import { softwareIdentityFromSecret } from '../trust/identity-software.ts'
import { median, percentile } from './stats.ts'

export interface LinkBenchResult {
  cipher: CipherName
  sizes: { bytes: number; rounds: number; sealed_rtt_us_p50: number; sealed_rtt_us_p99: number; plain_rtt_us_p50: number; plain_rtt_us_p99: number; sealed_gbps: number; plain_gbps: number; ratio: number }[]
  aead: { cipher: CipherName; bytes: number; gbps: number }[]
}

const MAX_FRAME = 80 * 1024 * 1024

/** The peer process: a sealed echo listener and a plain echo listener; prints its ports and key. */
export async function runLinkPeer(initiatorKeyB64: string, cipher: CipherName): Promise<void> {
  const secret = p256.utils.randomSecretKey()
  const identity = softwareIdentityFromSecret(secret)
  const initiatorKey = new Uint8Array(Buffer.from(initiatorKeyB64, 'base64'))
  const sealed = listenLinks(
    '127.0.0.1',
    0,
    { identity, serial: 'bench-peer', clusterId: 'bench', cipher, maxFrameBytes: MAX_FRAME, authorize: (serial, key) => (serial === 'bench-head' && equalBytes(key, initiatorKey) ? 'authorized' : 'not-pinned') },
    (link) => link.onFrame((f) => link.send(FrameType.data, f.payload)),
  )
  const plain = Bun.listen<{ decoder: FrameDecoder }>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open: (s) => void (s.data = { decoder: new FrameDecoder(MAX_FRAME) }),
      data: (s, chunk) => {
        for (const f of s.data.decoder.push(new Uint8Array(chunk))) writeAll(s, encodeFrame(f.type, f.body))
      },
      drain: (s) => flush(s),
    },
  })
  console.log(JSON.stringify({ sealedPort: sealed.port, plainPort: plain.port, key: Buffer.from(identity.publicKey).toString('base64') }))
  await new Promise(() => {}) // until killed
}

const pending = new WeakMap<object, Uint8Array[]>()
function writeAll(s: Socket<unknown>, bytes: Uint8Array) {
  const q = pending.get(s) ?? []
  pending.set(s, q)
  q.push(bytes)
  flush(s)
}
function flush(s: Socket<unknown>) {
  const q = pending.get(s)
  while (q?.length) {
    const n = s.write(q[0]!)
    if (n < q[0]!.byteLength) {
      q[0] = q[0]!.subarray(Math.max(n, 0))
      return
    }
    q.shift()
  }
}

function roundsFor(bytes: number) {
  return bytes <= 65536 ? 300 : bytes <= 4 * 1024 * 1024 ? 40 : 6
}

export interface LinkBenchOptions {
  /** Payload sizes for the round trips. */
  sizes: number[]
  /** Round trips per size (after 2 warm-up rounds); default by size (300 up to 64 KB, 40 up to 4 MB, 6 above). */
  rounds?: number
  /** Buffer sizes for the in-process seal+open measurement. */
  aeadSizes?: number[]
  cipher: CipherName
  /** argv that starts the peer process (this binary's `bench link --peer-key …`). */
  peerCommand: string[]
  onProgress?: (l: string) => void
}

export async function runLinkBench(options: LinkBenchOptions): Promise<LinkBenchResult> {
  const progress = options.onProgress ?? (() => {})
  const secret = p256.utils.randomSecretKey()
  const identity = softwareIdentityFromSecret(secret)
  const peer = Bun.spawn([...options.peerCommand, '--peer-key', Buffer.from(identity.publicKey).toString('base64'), '--cipher', options.cipher], { stdout: 'pipe', stderr: 'inherit' })
  try {
    const reader = peer.stdout.getReader()
    let text = ''
    while (!text.includes('\n')) {
      const { value, done } = await reader.read()
      if (done) throw new Error('the benchmark peer exited')
      text += new TextDecoder().decode(value)
    }
    const info = JSON.parse(text.split('\n')[0]!) as { sealedPort: number; plainPort: number; key: string }
    const peerKey = new Uint8Array(Buffer.from(info.key, 'base64'))
    const link = await connectLink('127.0.0.1', info.sealedPort, {
      identity,
      serial: 'bench-head',
      clusterId: 'bench',
      cipher: options.cipher,
      maxFrameBytes: MAX_FRAME,
      authorize: (serial, key) => (serial === 'bench-peer' && equalBytes(key, peerKey) ? 'authorized' : 'not-pinned'),
    })
    let sealedWaiter: (() => void) | null = null
    link.onFrame(() => sealedWaiter?.())
    const sealedRoundTrip = (payload: Uint8Array) =>
      new Promise<number>((resolve) => {
        const t0 = Bun.nanoseconds()
        sealedWaiter = () => resolve((Bun.nanoseconds() - t0) / 1e9)
        link.send(FrameType.data, payload)
      })
    const plain = await plainClient(info.plainPort)
    const sizes: LinkBenchResult['sizes'] = []
    for (const bytes of options.sizes) {
      const payload = new Uint8Array(bytes).map((_, i) => i * 31)
      const rounds = options.rounds ?? roundsFor(bytes)
      progress(`${bytes} bytes × ${rounds} round trips, sealed and plain`)
      const sealedTimes: number[] = []
      const plainTimes: number[] = []
      for (let r = 0; r < rounds + 2; r++) {
        // alternate so both see the same machine state
        const s = await sealedRoundTrip(payload)
        const p = await plain.roundTrip(payload)
        if (r >= 2) sealedTimes.push(s), plainTimes.push(p)
      }
      const s50 = median(sealedTimes)
      const p50 = median(plainTimes)
      sizes.push({
        bytes,
        rounds,
        sealed_rtt_us_p50: round(s50 * 1e6, 1),
        sealed_rtt_us_p99: round(percentile(sealedTimes, 99) * 1e6, 1),
        plain_rtt_us_p50: round(p50 * 1e6, 1),
        plain_rtt_us_p99: round(percentile(plainTimes, 99) * 1e6, 1),
        sealed_gbps: round((2 * bytes) / s50 / 1e9, 3),
        plain_gbps: round((2 * bytes) / p50 / 1e9, 3),
        ratio: round(s50 / p50, 2),
      })
    }
    link.close()
    plain.close()
    const aead: LinkBenchResult['aead'] = []
    for (const cipher of ['aes-256-gcm', 'chacha20-poly1305'] as const) {
      for (const bytes of options.aeadSizes ?? [4096, 262144, 4 * 1024 * 1024, 32 * 1024 * 1024]) {
        if (cipher === 'chacha20-poly1305' && bytes > 4 * 1024 * 1024) continue // pure JS (@noble): seconds per rep at 32 MB
        progress(`seal+open ${cipher} ${bytes} bytes`)
        aead.push({ cipher, bytes, gbps: round(aeadGbps(cipher, bytes), 3) })
      }
    }
    return { cipher: options.cipher, sizes, aead }
  } finally {
    peer.kill()
  }
}

async function plainClient(port: number) {
  let waiter: (() => void) | null = null
  const decoder = new FrameDecoder(MAX_FRAME)
  const socket = await Bun.connect({
    hostname: '127.0.0.1',
    port,
    socket: {
      data: (_s, chunk) => {
        if (decoder.push(new Uint8Array(chunk)).length) waiter?.()
      },
      drain: (s) => flush(s),
    },
  })
  return {
    roundTrip(payload: Uint8Array): Promise<number> {
      return new Promise((resolve) => {
        const t0 = Bun.nanoseconds()
        waiter = () => resolve((Bun.nanoseconds() - t0) / 1e9)
        writeAll(socket, encodeFrame(FrameType.data, payload))
      })
    },
    close: () => socket.end(),
  }
}

function aeadGbps(cipher: CipherName, bytes: number): number {
  const key = crypto.getRandomValues(new Uint8Array(32))
  const nonce = new Uint8Array(12)
  const aad = new Uint8Array(32)
  const data = new Uint8Array(bytes)
  const times: number[] = []
  const reps = Math.max(3, Math.min(200, Math.floor((64 * 1024 * 1024) / bytes)))
  for (let i = 0; i < reps; i++) {
    const t0 = Bun.nanoseconds()
    open(cipher, key, nonce, aad, seal(cipher, key, nonce, aad, data))
    times.push((Bun.nanoseconds() - t0) / 1e9)
  }
  return (2 * bytes) / median(times) / 1e9 // seal + open both process the bytes
}

const round = (v: number, d = 2) => Math.round(v * 10 ** d) / 10 ** d
