/** How ranks started by hand find each other for MLX distributed: they meet over the sealed link exactly as rdma-ping's
 * link transport does (rank 0 listens, the others dial it), each rank reports the IPv4 address and free port it offers
 * MLX (and its RDMA devices for jaccl), and rank 0 sends everyone the same layout. No hostfile is written by hand. */
import { lookup } from 'node:dns/promises'
import { createSocket } from 'node:dgram'
import { DbcError } from '../errors.ts'
import { FrameType } from '../link/frames.ts'
import type { SealedLink } from '../link/tcp-link.ts'
import { acceptRanks, dialRankZero, type RankLinkOptions } from './rank-meeting.ts'
import { buildLayout, type MlxLayout, type MlxTransportName, type RankReport } from './mlx-layout.ts'

const REPORT = 1n
const LAYOUT = 2n
const ACK = 3n

export interface RendezvousOptions {
  transport: MlxTransportName
  rank: number
  worldSize: number
  timeoutMs: number
  link: RankLinkOptions
  /** rank 0: where it listens for the others */
  listen?: { host: string; port: number }
  /** ranks > 0: rank 0's address */
  peer?: { host: string; port: number }
  /** jaccl: this rank's device towards each rank */
  devices?: (string | null)[]
  onListening?: (port: number) => void
}

const encode = (v: unknown) => new TextEncoder().encode(JSON.stringify(v))
const decode = <T>(b: Uint8Array): T => JSON.parse(new TextDecoder().decode(b)) as T

/** The address this machine sends from towards `host` (a connected UDP socket sends nothing). */
async function sourceAddress(host: string): Promise<string> {
  const socket = createSocket('udp4')
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.connect(9, host, () => resolve())
    })
    return socket.address().address
  } finally {
    socket.close()
  }
}

function freePort(ip: string): number {
  const listener = Bun.listen({ hostname: ip, port: 0, socket: { data() {} } })
  const port = listener.port
  listener.stop(true)
  return port
}

async function ipv4(host: string): Promise<string> {
  try {
    return (await lookup(host, { family: 4 })).address
  } catch (error) {
    throw new DbcError(
      'E_RDMA_PING_ADDRESS',
      `cannot resolve ${host} to an IPv4 address: ${(error as Error).message}`,
      "MLX distributed needs IPv4: give rank 0's IPv4 address",
    )
  }
}

const wildcard = (host: string) => host === '0.0.0.0' || host === '::' || host === ''

async function frame(link: SealedLink, id: bigint, timeoutMs: number): Promise<Uint8Array> {
  return (await link.nextFrame((f) => f.type === FrameType.data && f.requestId === id, timeoutMs)).payload
}

/** Runs the rendezvous and returns the layout every rank agreed on. */
export async function mlxRendezvous(o: RendezvousOptions): Promise<MlxLayout> {
  if (o.rank === 0) {
    const at = o.listen!
    const { links, stop } = await acceptRanks(at.host, at.port, o.worldSize, o.timeoutMs, o.link, o.onListening)
    try {
      const reports = await Promise.all(
        links.map(async (l) => decode<RankReport & { rankZeroIp: string }>(await frame(l, REPORT, o.timeoutMs))),
      )
      // listening on every interface: rank 0 is the address the others dialled
      const ip = wildcard(at.host) ? reports[0]!.rankZeroIp : await ipv4(at.host)
      const layout = buildLayout(o.transport, [
        { rank: 0, ip, port: freePort(ip), devices: o.devices },
        ...reports.map(({ rank, ip, port, devices }) => ({ rank, ip, port, devices })),
      ])
      for (const l of links) l.send(FrameType.data, encode(layout), { requestId: LAYOUT })
      await Promise.all(links.map((l) => frame(l, ACK, o.timeoutMs)))
      return layout
    } catch (error) {
      // tell the others why before closing, so they do not wait out their timeout
      if (error instanceof DbcError)
        for (const l of links)
          l.send(FrameType.data, encode({ error: error.message, hint: error.hint }), { requestId: LAYOUT })
      await Bun.sleep(50)
      throw error
    } finally {
      for (const l of links) l.close()
      stop()
    }
  }
  const peer = o.peer!
  const rankZeroIp = await ipv4(peer.host)
  const ip = await sourceAddress(rankZeroIp)
  const link = await dialRankZero(peer.host, peer.port, o.timeoutMs, o.link)
  try {
    link.send(FrameType.data, encode({ rank: o.rank, ip, port: freePort(ip), devices: o.devices, rankZeroIp }), {
      requestId: REPORT,
    })
    const answer = decode<MlxLayout & { error?: string; hint?: string }>(await frame(link, LAYOUT, o.timeoutMs))
    if (answer.error) throw new DbcError('E_RDMA_PING_RANKS', `rank 0: ${answer.error}`, answer.hint)
    link.send(FrameType.data, encode({ ok: true }), { requestId: ACK })
    return answer
  } finally {
    link.close()
  }
}
