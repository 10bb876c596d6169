/** `bench link`: round trips between two processes on loopback over the sealed link, over the same framing without
 * sealing and over a bare socket, in the same run, plus in-process seal/open GB/s per cipher (one-shot, and the link's
 * frame channel), plus a shard transfer (the distribution protocol over the sealed link against the same bytes over raw
 * TCP, both written to disk and hashed). */
import { p256 } from '@noble/curves/nist.js'
import { equalBytes } from '@noble/ciphers/utils.js'
import type { Socket } from 'bun'
import {
  closeSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildManifest } from '../distribution/manifest.ts'
import { receiveShards, serveShards } from '../distribution/shard-transfer.ts'
import {
  AeadReceiver,
  AeadSender,
  aeadImplementation,
  CIPHERS,
  frameImplementation,
  open,
  seal,
  type AeadOptions,
  type CipherName,
} from '../link/aead-channel.ts'
import { nativeChannel } from '../link/native-channel.ts'
import { FRAME_HEADER_BYTES, FrameType } from '../link/frames.ts'
import { FrameDecoder } from '../link/framing.ts'
import { connectLink, listenLinks } from '../link/tcp-link.ts'
import { softwareIdentityFromSecret } from '../trust/identity-software.ts'
import { median, percentile } from './stats.ts'

export interface LinkBenchResult {
  cipher: CipherName
  sizes: {
    bytes: number
    rounds: number
    sealed_rtt_us_p50: number
    sealed_rtt_us_p99: number
    plain_rtt_us_p50: number
    plain_rtt_us_p99: number
    /** The floor: the payload echoed over a bare Bun socket (no framing, no sealing), in the same rounds. */
    raw_rtt_us_p50: number
    raw_rtt_us_p99: number
    sealed_gbps: number
    plain_gbps: number
    ratio: number
    /** sealed and plain round trips over the raw one (medians). */
    sealed_vs_raw: number
    plain_vs_raw: number
  }[]
  /** Who sealed the link's frames in the round trips (the shim's C link channel, or the TypeScript channel). */
  frames: string
  /** implementation: what sealed the row (native, or @noble's JavaScript where the shim's libcrypto is missing). */
  aead: { cipher: CipherName; implementation: string; bytes: number; gbps: number }[]
  /** The link's frame channel in one process: a whole frame sealed (AeadSender.sealFrame) and opened
   * (AeadReceiver.openInto) per rep, by the C link channel and by the TypeScript channel. */
  channel: { cipher: CipherName; implementation: string; bytes: number; gbps: number }[]
  /** Present when a file size was given: one shard file moved peer → bench, sealed (shard transfer) and raw TCP. */
  file_transfer?: {
    bytes: number
    /** Medians over the runs (--file-repeat), sealed and raw alternating. */
    sealed_seconds: number
    plain_seconds: number
    sealed_gbps: number
    plain_gbps: number
    /** raw GB/s over sealed GB/s: how many times longer the sealed transfer took. */
    ratio: number
    sealed_runs: number[]
    plain_runs: number[]
  }
}

const MAX_FRAME = 80 * 1024 * 1024

const SHARD_FILE = 'model.safetensors'

/** A one-layer "model" whose weights file is `bytes` long (a valid safetensors header, then pseudo-random data written
 * 16 MiB at a time), for the file-transfer row. */
export function writeBenchShard(dir: string, bytes: number): void {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'bench-shard', num_hidden_layers: 1 }))
  let header = JSON.stringify({ 'model.layers.0.weight': { dtype: 'U32', shape: [0], data_offsets: [0, 0] } })
  const words = Math.max(1, Math.floor((bytes - 8 - header.length - 64) / 4))
  header = JSON.stringify({ 'model.layers.0.weight': { dtype: 'U32', shape: [words], data_offsets: [0, words * 4] } })
  header += ' '.repeat((8 - (header.length % 8)) % 8)
  const fd = openSync(join(dir, SHARD_FILE), 'w')
  try {
    const prefix = Buffer.alloc(8)
    prefix.writeBigUInt64LE(BigInt(header.length))
    writeSync(fd, prefix)
    writeSync(fd, header)
    const block = new Uint8Array(16 * 1024 * 1024)
    let x = 0x9e3779b9
    const words32 = new Uint32Array(block.buffer)
    for (let i = 0; i < words32.length; i++) words32[i] = x = (x * 1664525 + 1013904223) >>> 0
    for (let left = words * 4; left > 0; left -= block.byteLength)
      writeSync(fd, block, 0, Math.min(left, block.byteLength))
  } finally {
    closeSync(fd)
  }
}

/** The peer process: a sealed echo listener (which also serves shard files from fileDir), a plain echo listener and a raw
 * echo listener (bytes back as they come, no framing);
 * with fileDir, a raw TCP listener that streams the shard file to whoever connects. Prints its ports and key. */
export async function runLinkPeer(
  initiatorKeyB64: string,
  cipher: CipherName,
  fileDir?: string,
  frames?: AeadOptions['implementation'],
): Promise<void> {
  const secret = p256.utils.randomSecretKey()
  const identity = softwareIdentityFromSecret(secret)
  const initiatorKey = new Uint8Array(Buffer.from(initiatorKeyB64, 'base64'))
  const manifest = fileDir ? buildManifest(fileDir) : null
  const sealed = listenLinks(
    '127.0.0.1',
    0,
    {
      identity,
      serial: 'bench-peer',
      clusterId: 'bench',
      cipher,
      frames,
      maxFrameBytes: MAX_FRAME,
      authorize: (serial, key) =>
        serial === 'bench-head' && equalBytes(key, initiatorKey) ? 'authorized' : 'not-pinned',
    },
    (link) => {
      link.onFrame((f) => f.type === FrameType.data && link.send(FrameType.data, f.payload))
      if (fileDir && manifest) serveShards(link, fileDir, manifest, identity)
    },
  )
  const raw = fileDir ? rawFileServer(join(fileDir, SHARD_FILE)) : null
  const plain = Bun.listen<{ decoder: FrameDecoder }>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open: (s) => void (s.data = { decoder: new FrameDecoder(MAX_FRAME) }),
      data: (s, chunk) => {
        for (const f of s.data.decoder.push(chunk)) writeAll(s, frameOnce(f.type, f.body))
      },
      drain: (s) => flush(s),
    },
  })
  const rawEcho = Bun.listen({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      data: (s, chunk) => writeAll(s, chunk),
      drain: (s) => flush(s),
    },
  })
  console.log(
    JSON.stringify({
      sealedPort: sealed.port,
      plainPort: plain.port,
      rawPort: rawEcho.port,
      filePort: raw?.port ?? 0,
      key: Buffer.from(identity.publicKey).toString('base64'),
    }),
  )
  await new Promise(() => {}) // until killed
}

/** Streams a file to each connection, 4 MiB reads paced by the socket's drain (the raw-TCP baseline of a shard transfer). */
function rawFileServer(path: string) {
  type Sending = { fd: number; at: number; size: number; buffer: Uint8Array }
  const pump = (s: Socket<Sending>) => {
    const d = s.data
    while (d.at < d.size) {
      const n = readSync(d.fd, d.buffer, 0, Math.min(d.buffer.byteLength, d.size - d.at), d.at)
      const written = s.write(d.buffer.subarray(0, n))
      d.at += Math.max(0, written)
      if (written < n) return // wait for drain
    }
    closeSync(d.fd)
    s.end()
  }
  return Bun.listen<Sending>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open: (s) => {
        const fd = openSync(path, 'r')
        s.data = { fd, at: 0, size: fstatSync(fd).size, buffer: new Uint8Array(4 * 1024 * 1024) }
        pump(s)
      },
      drain: pump,
      data: () => {},
    },
  })
}

const framed = new Map<number, Uint8Array>()
/** The plain rows' framing, as the sealed link frames: header and body written in one pass into a buffer kept per size
 * (writeAll copies what the socket does not take at once, so the buffer is free again when it returns). */
function frameOnce(type: number, body: Uint8Array): Uint8Array {
  let frame = framed.get(body.byteLength)
  if (!frame) framed.set(body.byteLength, (frame = new Uint8Array(FRAME_HEADER_BYTES + body.byteLength)))
  const length = body.byteLength + 1
  for (let i = 0, v = length; i < 8; i++, v = Math.floor(v / 256)) frame[i] = v % 256
  frame[8] = type
  frame.set(body, FRAME_HEADER_BYTES)
  return frame
}

const pending = new WeakMap<object, Uint8Array[]>()
/** Writes now what the socket takes; the rest waits for drain, copied (`bytes` may be a socket's read buffer, and a
 * Buffer's slice() is a view). */
function writeAll(s: Socket<unknown>, bytes: Uint8Array) {
  const q = pending.get(s)
  if (q?.length) return void q.push(new Uint8Array(bytes))
  const n = s.write(bytes)
  if (n >= bytes.byteLength) return
  const rest = new Uint8Array(bytes.subarray(Math.max(n, 0)))
  if (q) q.push(rest)
  else pending.set(s, [rest])
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

/** Untimed round trips first, as many as timed ones up to 4 MiB (the JIT and the allocator settle over the first few
 * hundred small ones), 2 above. */
const warmupFor = (bytes: number, rounds: number) => (bytes <= 4 * 1024 * 1024 ? Math.max(2, rounds) : 2)

export interface LinkBenchOptions {
  /** Payload sizes for the round trips. */
  sizes: number[]
  /** Round trips per size (after as many untimed ones up to 4 MiB, 2 above); default by size (300 up to 64 KB, 40 up
   * to 4 MB, 6 above). */
  rounds?: number
  /** Buffer sizes for the in-process seal+open measurement. */
  aeadSizes?: number[]
  cipher: CipherName
  /** argv that starts the peer process (this binary's `bench link --peer-key …`). */
  peerCommand: string[]
  /** Size of the shard file for the file-transfer row (0 or absent: no such row). */
  fileBytes?: number
  /** Transfers of the shard each way, alternating sealed and raw (default 1); the row gives medians. */
  fileRepeat?: number
  /** Who seals the link's frames, on both ends (default: the shim's C link channel where it loads). */
  frames?: AeadOptions['implementation']
  onProgress?: (l: string) => void
}

export async function runLinkBench(options: LinkBenchOptions): Promise<LinkBenchResult> {
  const progress = options.onProgress ?? (() => {})
  const secret = p256.utils.randomSecretKey()
  const identity = softwareIdentityFromSecret(secret)
  const workDir = options.fileBytes ? mkdtempSync(join(tmpdir(), 'dbc-bench-file-')) : null
  if (workDir) {
    progress(`writing a ${options.fileBytes} byte shard to transfer`)
    writeBenchShard(join(workDir, 'head'), options.fileBytes!)
  }
  const fileArgs = workDir ? ['--file-dir', join(workDir, 'head')] : []
  const peer = Bun.spawn(
    [
      ...options.peerCommand,
      '--peer-key',
      Buffer.from(identity.publicKey).toString('base64'),
      '--cipher',
      options.cipher,
      '--frames',
      options.frames ?? 'auto',
      ...fileArgs,
    ],
    { stdout: 'pipe', stderr: 'inherit' },
  )
  try {
    const reader = peer.stdout.getReader()
    let text = ''
    while (!text.includes('\n')) {
      const { value, done } = await reader.read()
      if (done) throw new Error('the benchmark peer exited')
      text += new TextDecoder().decode(value)
    }
    const info = JSON.parse(text.split('\n')[0]!) as {
      sealedPort: number
      plainPort: number
      rawPort: number
      filePort: number
      key: string
    }
    const peerKey = new Uint8Array(Buffer.from(info.key, 'base64'))
    const link = await connectLink('127.0.0.1', info.sealedPort, {
      identity,
      serial: 'bench-head',
      clusterId: 'bench',
      cipher: options.cipher,
      frames: options.frames,
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
    const raw = await rawClient(info.rawPort)
    const sizes: LinkBenchResult['sizes'] = []
    for (const bytes of options.sizes) {
      const payload = new Uint8Array(bytes).map((_, i) => i * 31)
      const rounds = options.rounds ?? roundsFor(bytes)
      progress(`${bytes} bytes × ${rounds} round trips, sealed, plain and raw`)
      const sealedTimes: number[] = []
      const plainTimes: number[] = []
      const rawTimes: number[] = []
      const kinds = [
        { time: () => sealedRoundTrip(payload), times: sealedTimes },
        { time: () => plain.roundTrip(payload), times: plainTimes },
        { time: () => raw.roundTrip(payload), times: rawTimes },
      ]
      const warmup = warmupFor(bytes, rounds)
      for (let r = 0; r < rounds + warmup; r++) {
        // interleaved, each round in another order, so all three see the same machine state and none always goes first
        for (let k = 0; k < kinds.length; k++) {
          const kind = kinds[(r + k) % kinds.length]!
          const seconds = await kind.time()
          if (r >= warmup) kind.times.push(seconds)
        }
      }
      const s50 = median(sealedTimes)
      const p50 = median(plainTimes)
      const w50 = median(rawTimes)
      sizes.push({
        bytes,
        rounds,
        sealed_rtt_us_p50: round(s50 * 1e6, 1),
        sealed_rtt_us_p99: round(percentile(sealedTimes, 99) * 1e6, 1),
        plain_rtt_us_p50: round(p50 * 1e6, 1),
        plain_rtt_us_p99: round(percentile(plainTimes, 99) * 1e6, 1),
        raw_rtt_us_p50: round(w50 * 1e6, 1),
        raw_rtt_us_p99: round(percentile(rawTimes, 99) * 1e6, 1),
        sealed_gbps: round((2 * bytes) / s50 / 1e9, 3),
        plain_gbps: round((2 * bytes) / p50 / 1e9, 3),
        ratio: round(s50 / p50, 2),
        sealed_vs_raw: round(s50 / w50, 2),
        plain_vs_raw: round(p50 / w50, 2),
      })
    }
    let fileTransfer: LinkBenchResult['file_transfer']
    if (workDir) {
      const repeat = Math.max(1, options.fileRepeat ?? 1)
      const sealedRuns: number[] = []
      const plainRuns: number[] = []
      let sealedBytes = 0
      let rawBytes = 0
      for (let run = 0; run < repeat; run++) {
        // alternating, each pair in the other order, so neither always finds the page cache warmer
        for (const kind of run % 2 ? (['raw', 'sealed'] as const) : (['sealed', 'raw'] as const)) {
          progress(
            `shard transfer of ${options.fileBytes} bytes over ${kind === 'sealed' ? 'the sealed link' : 'raw TCP'}`,
          )
          const t0 = Bun.nanoseconds()
          if (kind === 'sealed') {
            const received = await receiveShards(link, {
              dir: join(workDir, 'sealed'),
              lo: 0,
              hi: 1,
              first: true,
              last: true,
              headKey: peerKey,
            })
            sealedRuns.push((Bun.nanoseconds() - t0) / 1e9)
            sealedBytes = received.bytes
            rmSync(join(workDir, 'sealed'), { recursive: true, force: true })
          } else {
            rawBytes = await receiveRaw(info.filePort, join(workDir, 'raw'))
            plainRuns.push((Bun.nanoseconds() - t0) / 1e9)
          }
        }
      }
      const sealedSeconds = median(sealedRuns)
      const plainSeconds = median(plainRuns)
      const sealedGbps = sealedBytes / sealedSeconds / 1e9
      const plainGbps = rawBytes / plainSeconds / 1e9
      fileTransfer = {
        bytes: sealedBytes,
        sealed_seconds: round(sealedSeconds, 3),
        plain_seconds: round(plainSeconds, 3),
        sealed_gbps: round(sealedGbps, 3),
        plain_gbps: round(plainGbps, 3),
        ratio: round(plainGbps / sealedGbps, 2),
        sealed_runs: sealedRuns.map((x) => round(x, 3)),
        plain_runs: plainRuns.map((x) => round(x, 3)),
      }
    }
    link.close()
    plain.close()
    raw.close()
    const aead: LinkBenchResult['aead'] = []
    for (const cipher of CIPHERS) {
      const implementation = aeadImplementation(cipher)
      for (const bytes of options.aeadSizes ?? [4096, 262144, 4 * 1024 * 1024, 32 * 1024 * 1024]) {
        // @noble's JavaScript takes seconds per rep at 32 MB: only where it is the fallback
        if (implementation.includes('@noble') && bytes > 4 * 1024 * 1024) continue
        progress(`seal+open ${cipher} (${implementation}) ${bytes} bytes`)
        aead.push({ cipher, implementation, bytes, gbps: round(aeadGbps(cipher, bytes), 3) })
      }
    }
    const channel: LinkBenchResult['channel'] = []
    for (const cipher of CIPHERS) {
      for (const implementation of ['native', 'script'] as const) {
        if (implementation === 'native' && !nativeChannel()?.has.has(cipher)) continue
        const name = frameImplementation(cipher, implementation)
        for (const bytes of options.aeadSizes ?? [4096, 262144, 4 * 1024 * 1024, 32 * 1024 * 1024]) {
          if (name.includes('@noble') && bytes > 4 * 1024 * 1024) continue
          progress(`frame seal+open ${cipher} (${name}) ${bytes} bytes`)
          channel.push({
            cipher,
            implementation: name,
            bytes,
            gbps: round(channelGbps(cipher, implementation, bytes), 3),
          })
        }
      }
    }
    return {
      cipher: options.cipher,
      frames: frameImplementation(options.cipher, options.frames),
      sizes,
      aead,
      channel,
      ...(fileTransfer ? { file_transfer: fileTransfer } : {}),
    }
  } finally {
    peer.kill()
    if (workDir) rmSync(workDir, { recursive: true, force: true })
  }
}

/** The raw-TCP side of the file row: the same per-byte work as a stage (write to disk, SHA-256), without sealing. */
async function receiveRaw(port: number, dir: string): Promise<number> {
  mkdirSync(dir, { recursive: true })
  const fd = openSync(join(dir, SHARD_FILE), 'w')
  const hasher = new Bun.CryptoHasher('sha256')
  let bytes = 0
  await new Promise<void>((resolve, reject) => {
    Bun.connect({
      hostname: '127.0.0.1',
      port,
      socket: {
        data: (_s, chunk) => {
          writeSync(fd, chunk)
          hasher.update(chunk)
          bytes += chunk.byteLength
        },
        close: () => resolve(),
        error: (_s, error) => reject(error),
        connectError: (_s, error) => reject(error),
      },
    }).catch(reject)
  })
  closeSync(fd)
  hasher.digest()
  rmSync(dir, { recursive: true, force: true })
  return bytes
}

async function plainClient(port: number) {
  let waiter: (() => void) | null = null
  const decoder = new FrameDecoder(MAX_FRAME)
  const socket = await Bun.connect({
    hostname: '127.0.0.1',
    port,
    socket: {
      data: (_s, chunk) => {
        if (decoder.push(chunk).length) waiter?.()
      },
      drain: (s) => flush(s),
    },
  })
  return {
    roundTrip(payload: Uint8Array): Promise<number> {
      return new Promise((resolve) => {
        const t0 = Bun.nanoseconds()
        waiter = () => resolve((Bun.nanoseconds() - t0) / 1e9)
        writeAll(socket, frameOnce(FrameType.data, payload))
      })
    },
    close: () => socket.end(),
  }
}

/** The floor under both: the payload written to a bare Bun socket and echoed back as it arrives. */
async function rawClient(port: number) {
  let waiter: ((bytes: number) => void) | null = null
  const socket = await Bun.connect({
    hostname: '127.0.0.1',
    port,
    socket: {
      data: (_s, chunk) => waiter?.(chunk.byteLength),
      drain: (s) => flush(s),
    },
  })
  return {
    roundTrip(payload: Uint8Array): Promise<number> {
      return new Promise((resolve) => {
        let left = payload.byteLength
        const t0 = Bun.nanoseconds()
        waiter = (bytes) => {
          if ((left -= bytes) <= 0) resolve((Bun.nanoseconds() - t0) / 1e9)
        }
        writeAll(socket, payload)
      })
    },
    close: () => socket.end(),
  }
}

/** A whole frame sealed and opened per rep by the link's channel, into buffers kept across reps (as a link keeps its). */
function channelGbps(cipher: CipherName, implementation: 'native' | 'script', bytes: number): number {
  const options = { cipher, key: crypto.getRandomValues(new Uint8Array(32)), direction: 1 as const, clusterId: 'bench' }
  const tx = new AeadSender({ ...options, implementation })
  const rx = new AeadReceiver({ ...options, implementation })
  const data = new Uint8Array(bytes)
  const frame = new Uint8Array(bytes + 45)
  const out = new Uint8Array(bytes)
  const header = { type: FrameType.data, stage: 0, requestId: 0n }
  const once = () => rx.openInto(FrameType.data, tx.sealFrame(header, data, frame).subarray(9), out, 0)
  const reps = Math.max(3, Math.min(2000, Math.floor((64 * 1024 * 1024) / bytes)))
  for (let i = 0; i < Math.max(2, Math.min(2000, (256 * 1024 * 1024) / bytes)); i++) once()
  const times: number[] = []
  for (let i = 0; i < reps; i++) {
    const t0 = Bun.nanoseconds()
    once()
    times.push((Bun.nanoseconds() - t0) / 1e9)
  }
  tx.free()
  rx.free()
  return (2 * bytes) / median(times) / 1e9
}

function aeadGbps(cipher: CipherName, bytes: number): number {
  const key = crypto.getRandomValues(new Uint8Array(32))
  const nonce = new Uint8Array(12)
  const aad = new Uint8Array(32)
  const data = new Uint8Array(bytes)
  const times: number[] = []
  const reps = Math.max(3, Math.min(2000, Math.floor((64 * 1024 * 1024) / bytes)))
  // untimed first (up to 2000 calls or 256 MiB): the JIT compiles the path over the first thousand or so calls
  for (let i = 0; i < Math.max(2, Math.min(2000, (256 * 1024 * 1024) / bytes)); i++)
    open(cipher, key, nonce, aad, seal(cipher, key, nonce, aad, data))
  for (let i = 0; i < reps; i++) {
    const t0 = Bun.nanoseconds()
    open(cipher, key, nonce, aad, seal(cipher, key, nonce, aad, data))
    times.push((Bun.nanoseconds() - t0) / 1e9)
  }
  return (2 * bytes) / median(times) / 1e9 // seal + open both process the bytes
}

const round = (v: number, d = 2) => Math.round(v * 10 ** d) / 10 ** d
