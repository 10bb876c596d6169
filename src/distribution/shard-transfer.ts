/** Shard transfer over a sealed link (docs/protocol.md §Distribution): the head serves the files of its model folder
 * and a manifest signed by its identity; a stage asks for the manifest, checks the signature against the head's pinned
 * key, works out the files its layer range needs, and pulls the ones it lacks in chunks (resumable from `.part` files,
 * optionally throttled), checking each file's SHA-256 before it takes the file's real name. */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { consola } from 'consola'
import { decodeMessage, encodeMessage, FrameType } from '../link/frames.ts'
import type { SealedLink } from '../link/tcp-link.ts'
import { fingerprint, type Identity } from '../trust/identity.ts'
import { ensureFreeSpace } from './disk-space.ts'
import { DistributionError } from './errors.ts'
import { readFileInChunks, sha256File } from './file-hash.ts'
import {
  encodeSignedManifest,
  filesForStage,
  signManifest,
  verifySignedManifest,
  type Manifest,
  type ManifestFile,
  type StageRange,
} from './manifest.ts'
import { VerifiedFiles } from './verified-files.ts'
import { progressMeter, type TransferProgress } from './progress.ts'

const log = consola.withTag('distribution')

/** The name under which the head offers its signed manifest (never a model file: model files never start with '.'). */
export const MANIFEST_FILE = '.dbcluster-manifest.signed.json'
export const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
/** The head answers no request for more than this (a stage may ask for less). */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024
const ZERO_HASH = new Uint8Array(32)

/** What the transfer needs of a link: sealed frames both ways (a SealedLink, or a ReconnectingLink's current one);
 * `send` seals before it returns, so a buffer sent may be filled again at once, and `recycle` takes back a chunk's memory
 * once it is written and hashed. */
export type FileLink = Pick<SealedLink, 'send' | 'onFrame' | 'onClose' | 'closed' | 'peerSerial'> &
  Partial<Pick<SealedLink, 'recycle'>>

// ---- messages (docs/protocol.md §Distribution): each request has a fresh request id, each answer carries it ----

const send = (link: FileLink, requestId: bigint, m: Parameters<typeof encodeMessage>[0]) => {
  const { type, payload } = encodeMessage(m)
  link.send(type, payload, { requestId })
}

/** A chunk request's bytes: u32 LE length | UTF-8 name (inside a fileChunk frame whose offset is the start). */
function encodeChunkRequest(length: number, name: string): Uint8Array {
  const nameBytes = new TextEncoder().encode(name)
  const out = new Uint8Array(4 + nameBytes.byteLength)
  new DataView(out.buffer).setUint32(0, length, true)
  out.set(nameBytes, 4)
  return out
}

function decodeChunkRequest(bytes: Uint8Array): { length: number; name: string } | null {
  if (bytes.byteLength < 4) return null
  try {
    return {
      length: new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true),
      name: new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(4)),
    }
  } catch {
    return null
  }
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

// ---- the head ----

export interface ServeEvent {
  /** A stage reported a file complete, with the SHA-256 it computed (matches: it was one of ours). */
  type: 'verified'
  peer: string
  file: string | null
  sha256: string
}

/** Answers a stage's manifest and chunk requests on `link` from `modelDir`, which `manifest` describes; only files the
 * manifest lists are ever read. Returns a function that stops serving (it also stops when the link closes). */
export function serveShards(
  link: FileLink,
  modelDir: string,
  manifest: Manifest,
  identity: Identity,
  onEvent: (e: ServeEvent) => void = () => {},
): () => void {
  const signed = signManifest(manifest, identity).then(encodeSignedManifest)
  const byName = new Map(manifest.files.map((f) => [f.name, f]))
  const bySha = new Map(manifest.files.map((f) => [f.sha256, f.name]))
  const fds = new Map<string, number>()
  const refuse = (requestId: bigint, code: string, message: string) =>
    send(link, requestId, { type: 'error', error: { code, message } })

  /** The answer's payload, `u64 offset | bytes`, read from disk straight into place (no copy of multi-MiB chunks), in
   * one buffer for every answer: the link seals it before send returns, and fresh memory per chunk costs page faults. */
  let answer = new Uint8Array(0)
  const readChunk = (name: string, offset: number, length: number): Uint8Array => {
    let fd = fds.get(name)
    if (fd === undefined) fds.set(name, (fd = openSync(join(modelDir, name), 'r')))
    if (answer.byteLength < 8 + length) answer = new Uint8Array(8 + length)
    const out = answer.subarray(0, 8 + length)
    new DataView(out.buffer, out.byteOffset).setBigUint64(0, BigInt(offset), true)
    for (let at = 0; at < length;) {
      const n = readSync(fd, out, 8 + at, length - at, offset + at)
      if (n <= 0) throw new DistributionError('E_FILE_READ', `${name} ends before byte ${offset + length} on the head`)
      at += n
    }
    return out
  }

  const handle = async (type: number, requestId: bigint, payload: Uint8Array) => {
    const m = decodeMessage(type, payload)
    if (m.type === 'fileOffer') {
      // a stage asks what the head offers: the signed manifest, as a file of its own
      const bytes = await signed
      const sha256 = new Uint8Array(new Bun.CryptoHasher('sha256').update(bytes).digest())
      return send(link, requestId, { type: 'fileOffer', size: BigInt(bytes.byteLength), sha256, name: MANIFEST_FILE })
    }
    if (m.type === 'fileDone')
      return onEvent({
        type: 'verified',
        peer: link.peerSerial,
        file: bySha.get(hex(m.sha256)) ?? null,
        sha256: hex(m.sha256),
      })
    if (m.type !== 'fileChunk') return
    const request = decodeChunkRequest(m.bytes)
    if (!request) return refuse(requestId, 'E_FILE_REQUEST', 'a chunk request must carry u32 length | UTF-8 name')
    const offset = Number(m.offset)
    const { length, name } = request
    if (length < 1 || length > MAX_CHUNK_BYTES)
      return refuse(requestId, 'E_FILE_RANGE', `chunks are 1 to ${MAX_CHUNK_BYTES} bytes, not ${length}`)
    if (name === MANIFEST_FILE) {
      const whole = await signed
      if (offset + length > whole.byteLength)
        return refuse(requestId, 'E_FILE_RANGE', `the manifest is ${whole.byteLength} bytes`)
      return send(link, requestId, {
        type: 'fileChunk',
        offset: m.offset,
        bytes: whole.subarray(offset, offset + length),
      })
    }
    const file = byName.get(name)
    if (!file) return refuse(requestId, 'E_FILE_UNKNOWN', `the head offers no file named ${JSON.stringify(name)}`)
    if (offset + length > file.size)
      return refuse(
        requestId,
        'E_FILE_RANGE',
        `${name} is ${file.size} bytes; bytes ${offset}..${offset + length} do not exist`,
      )
    link.send(FrameType.fileChunk, readChunk(name, offset, length), { requestId })
  }

  const off = link.onFrame((f) => {
    if (f.type !== FrameType.fileOffer && f.type !== FrameType.fileChunk && f.type !== FrameType.fileDone) return
    handle(f.type, f.requestId, f.payload).catch((error) => {
      log.warn(`serving ${link.peerSerial}: ${(error as Error).message}`)
      if (!link.closed)
        refuse(f.requestId, error instanceof DistributionError ? error.code : 'E_FILE_READ', (error as Error).message)
    })
  })
  const stop = () => {
    off()
    for (const fd of fds.values()) closeSync(fd)
    fds.clear()
  }
  link.onClose(stop)
  return stop
}

// ---- a stage ----

export type ReceiveEvent =
  | { type: 'present'; file: string; checked: 'hashed' | 'unchanged since verified' }
  | { type: 'received'; file: string; bytes: number; resumedFrom: number }
  | { type: 'retry'; file: string; reason: string }

export interface ReceiveOptions extends StageRange {
  /** The stage's model folder: files land here (a `.part` beside each while it arrives). */
  dir: string
  /** The head's identity key as pinned on this node: the manifest must be signed by it. */
  headKey: Uint8Array
  chunkBytes?: number
  /** Chunk requests in flight at once (keeps the link busy across its round trip). */
  window?: number
  /** At most this many bytes per second, so the transfer leaves room for inference traffic on the same link. */
  throttleBytesPerSecond?: number
  /** A request unanswered this long fails the transfer. */
  timeoutMs?: number
  onProgress?: (p: TransferProgress) => void
  onEvent?: (e: ReceiveEvent) => void
}

export interface ReceiveResult {
  manifest: Manifest
  /** Every file this stage needs (now present and verified), and which of them came over the link. */
  files: string[]
  received: string[]
  bytes: number
}

/** Request/answer plumbing: each request gets a fresh id; the answer (or the link closing, or silence) settles it. */
function requester(link: FileLink, timeoutMs: number) {
  let next = (BigInt(Date.now()) << 20n) | BigInt(Math.floor(Math.random() * 2 ** 20)) // apart from an earlier run's ids
  const pending = new Map<
    bigint,
    {
      resolve: (m: ReturnType<typeof decodeMessage>) => void
      reject: (e: Error) => void
      timer: ReturnType<typeof setTimeout>
    }
  >()
  const failAll = (error: Error) => {
    for (const p of pending.values()) (clearTimeout(p.timer), p.reject(error))
    pending.clear()
  }
  const off = link.onFrame((f) => {
    const p = pending.get(f.requestId)
    if (!p || (f.type !== FrameType.fileOffer && f.type !== FrameType.fileChunk && f.type !== FrameType.error)) return
    pending.delete(f.requestId)
    clearTimeout(p.timer)
    try {
      p.resolve(decodeMessage(f.type, f.payload))
    } catch (error) {
      p.reject(error as Error)
    }
  })
  link.onClose((reason) =>
    failAll(
      new DistributionError(
        'E_TRANSFER_LINK',
        `the link to the head closed during the transfer${reason ? `: ${reason.message}` : ''}`,
        'run it again: finished files are kept and a partial one resumes',
      ),
    ),
  )
  return {
    ask(m: Parameters<typeof encodeMessage>[0]): Promise<ReturnType<typeof decodeMessage>> {
      const id = ++next
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id)
          reject(
            new DistributionError(
              'E_TRANSFER_TIMEOUT',
              `the head did not answer within ${timeoutMs} ms`,
              'is the head overloaded? run it again to resume',
            ),
          )
        }, timeoutMs)
        pending.set(id, { resolve, reject, timer })
        try {
          send(link, id, m)
        } catch (error) {
          pending.delete(id)
          clearTimeout(timer)
          reject(error)
        }
      })
    },
    tell: (m: Parameters<typeof encodeMessage>[0]) => send(link, ++next, m),
    stop() {
      off()
      failAll(new DistributionError('E_TRANSFER_STOPPED', 'the transfer stopped'))
    },
  }
}

/** A token bucket of one: waits until `bytes` more fit under the rate since the start. */
function throttle(bytesPerSecond: number | undefined) {
  const started = performance.now()
  let granted = 0
  return async (bytes: number) => {
    if (!bytesPerSecond) return
    granted += bytes
    const due = (granted / bytesPerSecond) * 1000 - (performance.now() - started)
    if (due > 0) await Bun.sleep(due)
  }
}

type Ask = ReturnType<typeof requester>['ask']

/** Pulls `name` into `part` from its current size to `size`, `window` chunk requests in flight; returns the bytes that
 * were in the part before (the resume point) and the SHA-256 of the whole file. */
async function pullInto(
  ask: Ask,
  name: string,
  size: number,
  part: string,
  o: {
    chunk: number
    window: number
    pace: (n: number) => Promise<void>
    onBytes: (n: number) => void
    recycle: (bytes: Uint8Array) => void
  },
) {
  let at = existsSync(part) ? statSync(part).size : 0
  if (at > size) truncateSync(part, (at = 0))
  const resumedFrom = at
  const hasher = new Bun.CryptoHasher('sha256')
  if (at) readFileInChunks(part, (b) => hasher.update(b)) // the part's bytes count toward the hash too
  const fd = openSync(part, at ? 'a' : 'w')
  try {
    const inFlight: { offset: number; length: number; answer: Promise<ReturnType<typeof decodeMessage>> }[] = []
    let next = at
    while (at < size) {
      while (inFlight.length < o.window && next < size) {
        const length = Math.min(o.chunk, size - next)
        await o.pace(length)
        const answer = ask({ type: 'fileChunk', offset: BigInt(next), bytes: encodeChunkRequest(length, name) })
        answer.catch(() => {}) // awaited in order below; one left behind by an earlier failure must not go unhandled
        inFlight.push({ offset: next, length, answer })
        next += length
      }
      const { offset, length, answer } = inFlight.shift()!
      const m = await answer
      if (m.type === 'error')
        throw new DistributionError(
          m.error.code,
          `the head refused ${name}: ${m.error.message}`,
          'is the head serving the same model?',
        )
      if (m.type !== 'fileChunk' || Number(m.offset) !== offset || m.bytes.byteLength !== length) {
        throw new DistributionError(
          'E_TRANSFER_PROTOCOL',
          `asked for ${length} bytes of ${name} at ${offset}, got something else`,
        )
      }
      const bytes = m.bytes
      writeAllSync(fd, bytes)
      hasher.update(bytes)
      o.recycle(bytes)
      at += length
      o.onBytes(length)
    }
  } finally {
    closeSync(fd)
  }
  return { resumedFrom, sha256: hasher.digest('hex') }
}

/** All of bytes to fd, at its current position (a short write continues). */
function writeAllSync(fd: number, bytes: Uint8Array): void {
  for (let at = 0; at < bytes.byteLength;) at += writeSync(fd, bytes, at, bytes.byteLength - at)
}

/** Fetches the head's signed manifest and checks it against the head's pinned key. */
async function fetchManifest(ask: Ask, headKey: Uint8Array, chunk: number): Promise<Manifest> {
  const offer = await ask({ type: 'fileOffer', size: 0n, sha256: ZERO_HASH, name: '' })
  if (offer.type === 'error')
    throw new DistributionError(offer.error.code, `the head has no manifest to offer: ${offer.error.message}`)
  if (offer.type !== 'fileOffer' || offer.name !== MANIFEST_FILE || offer.size > BigInt(MAX_CHUNK_BYTES) * 64n) {
    throw new DistributionError('E_TRANSFER_PROTOCOL', 'the head answered the manifest request with something else')
  }
  const size = Number(offer.size)
  const bytes = new Uint8Array(size)
  for (let at = 0; at < size;) {
    const length = Math.min(chunk, size - at)
    const m = await ask({ type: 'fileChunk', offset: BigInt(at), bytes: encodeChunkRequest(length, MANIFEST_FILE) })
    if (m.type !== 'fileChunk' || m.bytes.byteLength !== length)
      throw new DistributionError('E_TRANSFER_PROTOCOL', 'the manifest did not arrive whole')
    bytes.set(m.bytes, at)
    at += length
  }
  if (hex(new Uint8Array(new Bun.CryptoHasher('sha256').update(bytes).digest())) !== hex(offer.sha256)) {
    throw new DistributionError('E_TRANSFER_PROTOCOL', 'the manifest does not match the hash the head offered')
  }
  return verifySignedManifest(bytes, headKey)
}

/** Makes `dir` hold every file the stage's layer range needs, verified against the head's signed manifest: files already
 * there with the right hash are kept, the rest come over the link. Throws (naming the file) when a file fails its hash
 * twice, when the disk is too small (saying how much is missing), or when the link fails (a new call resumes). */
export async function receiveShards(link: FileLink, options: ReceiveOptions): Promise<ReceiveResult> {
  const chunk = options.chunkBytes ?? DEFAULT_CHUNK_BYTES
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > MAX_CHUNK_BYTES)
    throw new DistributionError('E_USAGE', `chunk size must be 1 to ${MAX_CHUNK_BYTES} bytes, not ${chunk}`)
  const rpc = requester(link, options.timeoutMs ?? 30_000)
  try {
    const manifest = await fetchManifest(rpc.ask, options.headKey, chunk)
    log.debug(`manifest from ${link.peerSerial} verified against ${fingerprint(options.headKey)}`)
    const needed = filesForStage(manifest, options)
    mkdirSync(options.dir, { recursive: true })
    const missing: ManifestFile[] = []
    const verified = VerifiedFiles.open(options.dir)
    for (const f of needed) {
      const path = join(options.dir, f.name)
      if (verified.has(f.name, f.sha256))
        options.onEvent?.({ type: 'present', file: f.name, checked: 'unchanged since verified' })
      else if (existsSync(path) && statSync(path).size === f.size && sha256File(path) === f.sha256) {
        verified.record(f.name, f.sha256)
        options.onEvent?.({ type: 'present', file: f.name, checked: 'hashed' })
      } else {
        verified.forget(f.name)
        missing.push(f)
      }
    }
    verified.save()
    const partSize = (f: ManifestFile) =>
      existsSync(join(options.dir, `${f.name}.part`))
        ? Math.min(statSync(join(options.dir, `${f.name}.part`)).size, f.size)
        : 0
    const total = missing.reduce((a, f) => a + f.size - partSize(f), 0)
    ensureFreeSpace(options.dir, total, `the layers [${options.lo}, ${options.hi}) of this stage`)
    const meter = progressMeter(total, options.onProgress)
    const pace = throttle(options.throttleBytesPerSecond)
    for (const f of missing) {
      const path = join(options.dir, f.name)
      const part = `${path}.part`
      mkdirSync(dirname(path), { recursive: true })
      for (let attempt = 1; ; attempt++) {
        const { resumedFrom, sha256 } = await pullInto(rpc.ask, f.name, f.size, part, {
          chunk,
          window: options.window ?? 4,
          pace,
          onBytes: (n) => meter.add(f.name, n),
          recycle: (bytes) => link.recycle?.(bytes),
        })
        if (sha256 === f.sha256) {
          renameSync(part, path)
          verified.record(f.name, sha256)
          verified.save()
          rpc.tell({ type: 'fileDone', sha256: new Uint8Array(Buffer.from(sha256, 'hex')) })
          options.onEvent?.({ type: 'received', file: f.name, bytes: f.size - resumedFrom, resumedFrom })
          break
        }
        rmSync(part, { force: true })
        if (attempt >= 2) {
          throw new DistributionError(
            'E_HASH_MISMATCH',
            `${f.name} from ${link.peerSerial || 'the head'} does not match the manifest's SHA-256 ${f.sha256}, twice; it was deleted and this stage will not load`,
            "the head's copy differs from its manifest: run 'dbcluster model list --verify' on the head",
          )
        }
        options.onEvent?.({
          type: 'retry',
          file: f.name,
          reason: `${f.name} does not match its SHA-256 (got ${sha256}): deleted, fetching it once more`,
        })
      }
    }
    return { manifest, files: needed.map((f) => f.name), received: missing.map((f) => f.name), bytes: meter.bytes }
  } finally {
    rpc.stop()
  }
}
