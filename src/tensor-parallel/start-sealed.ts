/** Sealed tensor parallel: how its ranks meet. Over the link (handshake, pinned keys only) rank 0 learns each rank's
 * number and hands it a fresh 32-byte key and the port of a blocking socket; the rank connects there and proves the key
 * with a sealed hello; once every hello opened, rank 0 says so over the link and the links close. From then on only
 * the blocking sockets carry the group's frames (sealed-group.ts). Any backend; on the cpu backend it is the
 * only tensor parallel there is. */
import { randomBytes } from 'node:crypto'
import { checkRoster, vouchForCluster, type RosterRefused } from '../cluster/cluster-roster.ts'
import type { CoordinatorClient } from '../coordinator/client.ts'
import { DbcError, UsageError } from '../errors.ts'
import { signAttestation } from '../trust/attestation.ts'
import { machineFacts } from '../trust/machine-info.ts'
import { BlockingListener, BlockingSocket } from './blocking-socket.ts'
import type { CipherName } from '../link/aead-channel.ts'
import { FrameType } from '../link/frames.ts'
import type { SealedLink } from '../link/tcp-link.ts'
import { acceptRanks, dialRankZero } from './rank-meeting.ts'
import type { Backend } from '../tensor/backend.ts'
import { openTpChannel, SealedTpGroup, tpSealing, type TpChannel } from './sealed-group.ts'
import type { TensorParallel } from '../tensor/tensor-parallel.ts'
import type { Identity } from '../trust/identity.ts'
import type { Authorizer } from '../trust/pinned-keys.ts'
import { hostPort } from './start-mlx.ts'

export interface SealedTensorParallelOptions {
  size: number
  rank: number
  /** rank 0: HOST:PORT where the ranks meet (the data sockets listen on the same host, on a free port) */
  listen: string
  /** ranks > 0: rank 0's HOST:PORT */
  peer?: string
  timeoutMs: number
  identity: Identity
  serial: string
  authorize: Authorizer
  clusterId: string
  /** What this rank serves (model/serving-fingerprint.ts): every rank's must equal rank 0's. */
  fingerprint: Uint8Array
  /** The AEAD of the meeting links and the group's sockets (--cipher; default AES-256-GCM): the same on every rank. */
  cipher?: CipherName
  /** With --coordinator: rank 0 has the group vouched for by a signed roster, the other ranks check it before they
   * connect their sockets (cluster/cluster-roster.ts, as a pipeline's head and stages do). */
  coordinator?: CoordinatorClient
  log: (line: string) => void
}

/** What the meeting link carries, as `data` frames told apart by request id: rank → 0 its rank and what it serves,
 * then its fresh attestation (JSON); 0 → rank the coordinator's roster (JSON, empty without a coordinator), then the
 * socket's port and key; rank → 0 connected; 0 → rank done. */
export const MEET = { rank: 1n, offer: 2n, connected: 3n, done: 4n, attestation: 5n, roster: 6n } as const

/** Every exchange inside a step must finish within this; a rank that stops answering fails the step, not hangs it. */
export const STEP_EXCHANGE_TIMEOUT_MS = 30_000

const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer)
const readU32 = (b: Uint8Array, at = 0) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true)

/** A rank's first message: u32 rank | the 32-byte fingerprint of what it serves, which must be rank 0's. */
function rankOf(message: Uint8Array, fingerprint: Uint8Array): number {
  if (message.byteLength !== 4 + fingerprint.byteLength)
    throw new DbcError(
      'E_TP_HELLO',
      `a rank's first message has ${message.byteLength} bytes, expected ${4 + fingerprint.byteLength}`,
      'run the same dbcluster release on every rank',
    )
  const rank = readU32(message)
  if (!message.subarray(4).every((b, i) => b === fingerprint[i])) {
    throw new DbcError(
      'E_TP_MODEL',
      `rank ${rank} serves another model or settings than rank 0 (config.json, the weights, --max-batch or --max-context differ)`,
      'give every rank the same model folder, --max-batch and --max-context',
    )
  }
  return rank
}

function data(link: SealedLink, id: bigint, timeoutMs: number): Promise<Uint8Array> {
  return link.nextFrame((f) => f.type === FrameType.data && f.requestId === id, timeoutMs).then((f) => f.payload)
}

type Vouched = Awaited<ReturnType<typeof vouchForCluster>>

export interface SealedTensorParallel {
  group: SealedTpGroup
  tp: TensorParallel
  /** Rank 0 with a coordinator: the roster's verdict on every rank and the group's registration (close it on stop). */
  vouched: Vouched | null
  /** After the group failed, a new meeting as at the start (fresh keys), returning the connections for
   * SealedTpGroup.restore: rank 0 waits for every other rank, the others dial rank 0; either fails when the meeting
   * does not happen within the timeout. */
  rejoin: (announce: boolean) => Promise<TpChannel[]>
}

export async function startSealedTensorParallel(
  o: SealedTensorParallelOptions,
  backend: Backend,
): Promise<SealedTensorParallel> {
  const links = {
    identity: o.identity,
    serial: o.serial,
    authorize: o.authorize,
    clusterId: o.clusterId,
    peerFlag: '--tp-peer',
    cipher: o.cipher,
  }
  const roster: { vouched: Vouched | null } = { vouched: null }
  const channels = o.rank === 0 ? await meetRanks(o, links, roster) : [await meetRankZero(o, links)]
  const group = new SealedTpGroup(o.rank, o.size, channels, STEP_EXCHANGE_TIMEOUT_MS)
  const cipher = o.cipher ?? 'aes-256-gcm'
  o.log(
    `tensor parallel rank ${o.rank} of ${o.size}: sealed sockets up (${cipher} ${tpSealing(cipher)}, one key per rank)`,
  )
  const rejoin = (announce: boolean) =>
    o.rank === 0 ? meetRanks(o, links, roster, announce ? 'rejoin' : 'quiet') : meetRankZero(o, links).then((c) => [c])
  return { group, tp: group.tensorParallel(backend), rejoin, vouched: roster.vouched }
}

/** Rank 0: every other rank meets it over the link and connects its sealed socket; the connections in rank order. */
async function meetRanks(
  o: SealedTensorParallelOptions,
  links: Parameters<typeof acceptRanks>[4],
  roster: { vouched: Vouched | null },
  mode: 'start' | 'rejoin' | 'quiet' = 'start',
): Promise<TpChannel[]> {
  const at = hostPort(o.listen, 'tp-listen')
  const sockets = BlockingListener.listen(at.host, 0)
  const met = await acceptRanks(at.host, at.port, o.size, o.timeoutMs, links, (port) =>
    mode === 'quiet'
      ? undefined
      : o.log(
          mode === 'rejoin'
            ? `tensor parallel rank 0 waiting on ${at.host}:${port} for the ranks to rejoin`
            : `tensor parallel rank 0 listening on ${at.host}:${port}; start the others with --tp-peer <this host>:${port}`,
        ),
  ).catch((error) => {
    sockets.close()
    throw error
  })
  const channels: (TpChannel | undefined)[] = new Array(o.size - 1)
  const keys = new Map<number, { key: Uint8Array; link: SealedLink }>()
  try {
    // a link delivers a frame only to a listener already waiting: wait for a rank's two hello frames at once
    const hellos = await Promise.all(
      met.links.map((l) => {
        const attestation = data(l, MEET.attestation, o.timeoutMs)
        attestation.catch(() => {}) // when the rank frame fails first, this one's rejection is not news
        return Promise.all([data(l, MEET.rank, o.timeoutMs).then((b) => rankOf(b, o.fingerprint)), attestation])
      }),
    )
    const ranks = hellos.map(([rank]) => rank)
    const seen = new Set<number>()
    for (const r of ranks) {
      if (!Number.isInteger(r) || r < 1 || r >= o.size || seen.has(r))
        throw new DbcError(
          'E_TP_RANKS',
          `two ranks, or a rank outside 1..${o.size - 1}, joined (got rank ${r})`,
          'give every rank a different --tp-rank and the same --tp',
        )
      seen.add(r)
    }
    // the group is vouched for once; a rejoin hands the ranks the same roster to check again
    if (o.coordinator && !roster.vouched) {
      const members = met.links.map((l, i) => ({
        rank: ranks[i]!,
        serial: l.peerSerial,
        publicKey: l.peerPublicKey,
        attestation: new TextDecoder().decode(hellos[i]![1]),
      }))
      roster.vouched = await vouchForCluster(o.coordinator, { serial: o.serial, identity: o.identity }, members)
      const t = roster.vouched.trust
      o.log(`the coordinator vouches for tensor-parallel group ${t.cluster_id}: trust ${t.trust_level}`)
    }
    const rosterBytes = new TextEncoder().encode(roster.vouched ? JSON.stringify(roster.vouched.roster) : '')
    for (const l of met.links) l.send(FrameType.data, rosterBytes, { requestId: MEET.roster })
    ranks.forEach((r, i) => {
      const key = new Uint8Array(randomBytes(32))
      keys.set(r, { key, link: met.links[i]! })
      const offer = new Uint8Array(36)
      offer.set(u32(sockets.port))
      offer.set(key, 4)
      met.links[i]!.send(FrameType.data, offer, { requestId: MEET.offer })
    })
    // every rank has connected (its hello waits in the socket) before this thread blocks in accept
    await Promise.all(met.links.map((l) => data(l, MEET.connected, o.timeoutMs)))
    for (let i = 0; i < o.size - 1; i++) {
      const socket = sockets.accept(o.timeoutMs)
      // the rank in clear first, to pick its key; the sealed hello that follows proves the connection holds that key
      const rank = readU32(socket.receive(4, o.timeoutMs))
      const mine = keys.get(rank)
      if (!mine || channels[rank - 1]) {
        socket.close()
        throw new DbcError(
          'E_TP_HELLO',
          `a connection to the tensor-parallel port claimed rank ${rank}`,
          'only the ranks that met over the link may connect; check what else reaches this port',
        )
      }
      const channel = openTpChannel(socket, mine.key, o.clusterId, 0, rank, o.cipher)
      channels[rank - 1] = channel
      if (readU32(channel.receive(FrameType.tpHello, 4, o.timeoutMs)) !== rank)
        throw new DbcError('E_TP_HELLO', `rank ${rank}'s hello names another rank`, 'restart every rank')
    }
    for (const l of met.links) l.send(FrameType.data, new Uint8Array(0), { requestId: MEET.done })
    await Bun.sleep(50) // let the done frames leave before the links close
  } catch (error) {
    for (const c of channels) c?.close()
    throw error
  } finally {
    sockets.close()
    met.stop()
    for (const l of met.links) l.close()
  }
  return channels as TpChannel[]
}

/** Ranks > 0: meets rank 0 over the link and connects the sealed socket it offers. */
async function meetRankZero(
  o: SealedTensorParallelOptions,
  links: Parameters<typeof acceptRanks>[4],
): Promise<TpChannel> {
  if (!o.peer)
    throw new UsageError(
      'ranks > 0 need --tp-peer HOST:PORT of rank 0',
      'rank 0 prints the address to use when it starts',
    )
  const at = hostPort(o.peer, 'tp-peer')
  const link = await dialRankZero(at.host, at.port, o.timeoutMs, links)
  let channel: TpChannel | undefined
  try {
    const hello = new Uint8Array(4 + o.fingerprint.byteLength)
    hello.set(u32(o.rank))
    hello.set(o.fingerprint, 4)
    // rank 0 answers with the roster and then the offer: both listeners wait before anything is sent
    const rosterFrame = data(link, MEET.roster, o.timeoutMs)
    const offerFrame = data(link, MEET.offer, o.timeoutMs)
    offerFrame.catch(() => {}) // a refused roster ends the meeting before the offer is read
    rosterFrame.catch(() => {})
    link.send(FrameType.data, hello, { requestId: MEET.rank })
    const attestation = await signAttestation(o.identity, { ...machineFacts(), serial: o.serial, rdmaEnabled: false })
    link.send(FrameType.data, new TextEncoder().encode(JSON.stringify(attestation)), { requestId: MEET.attestation })
    const roster = new TextDecoder().decode(await rosterFrame)
    if (o.coordinator) {
      const body = await checkRoster(
        o.coordinator,
        roster,
        { serial: o.serial, publicKey: o.identity.publicKey },
        { serial: link.peerSerial, publicKey: link.peerPublicKey },
      ).catch((error: RosterRefused) => {
        link.close(error) // rank 0 hears why
        throw error
      })
      o.log(`roster ${body.cluster_id}: the coordinator vouches for this group (trust ${body.trust_level})`)
    } else if (roster) o.log('rank 0 sent a coordinator-signed roster; this rank has no --coordinator to check it')
    const offer = await offerFrame
    if (offer.byteLength !== 36)
      throw new DbcError(
        'E_TP_HELLO',
        `rank 0's offer has ${offer.byteLength} bytes, expected 36`,
        'run the same dbcluster release on every rank',
      )
    const socket = BlockingSocket.connect(at.host, readU32(offer), o.timeoutMs)
    try {
      socket.send(u32(o.rank), o.timeoutMs)
    } catch (error) {
      socket.close()
      throw error
    }
    channel = openTpChannel(socket, offer.slice(4), o.clusterId, o.rank, 0, o.cipher)
    channel.send(FrameType.tpHello, u32(o.rank), o.timeoutMs)
    link.send(FrameType.data, new Uint8Array(0), { requestId: MEET.connected })
    await data(link, MEET.done, o.timeoutMs)
  } catch (error) {
    channel?.close()
    throw error
  } finally {
    link.close()
  }
  return channel
}
