/** all_sum over sealed links, star-shaped: every rank > 0 sends its vector to rank 0, which adds them all and sends
 * the sum back. One `data` frame each way per rank per round; the round number rides in the request id. */
import { DbcError } from '../errors.ts'
import { FrameType } from '../link/frames.ts'
import type { SealedLink } from '../link/tcp-link.ts'

const asBytes = (v: Float32Array) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
const asFloats = (b: Uint8Array) => new Float32Array(b.slice().buffer)

export type AllSum = (data: Float32Array, round: bigint) => Promise<Float32Array>

/** The request id of the last frame each rank > 0 sends: "I have every sum" (rounds count up from 0, far below it;
 * the link keeps 2^64-1 for its own frames). */
export const DONE_REQUEST_ID = 0xffff_ffff_ffff_fff0n

export function hubAllSum(peers: readonly SealedLink[], timeoutMs: number): AllSum {
  return async (data, round) => {
    const parts = await Promise.all(
      peers.map((l) => l.nextFrame((f) => f.type === FrameType.data && f.requestId === round, timeoutMs)),
    )
    const sum = data.slice()
    for (const p of parts) {
      const v = asFloats(p.payload)
      if (v.length !== sum.length)
        throw new DbcError(
          'E_RDMA_PING_SIZE',
          `a peer sent ${v.length} elements, expected ${sum.length}`,
          'run every rank with the same --sizes',
        )
      for (let i = 0; i < sum.length; i++) sum[i]! += v[i]!
    }
    for (const l of peers) l.send(FrameType.data, asBytes(sum), { requestId: round })
    return sum
  }
}

export function spokeAllSum(hub: SealedLink, timeoutMs: number): AllSum {
  return async (data, round) => {
    const reply = hub.nextFrame((f) => f.type === FrameType.data && f.requestId === round, timeoutMs)
    hub.send(FrameType.data, asBytes(data), { requestId: round })
    return asFloats((await reply).payload)
  }
}

/** Rank 0, after the last round: waits until every other rank says it received the last sum, so closing cannot cut a
 * large sum still on its way (close() drops what the socket has not taken yet). */
export async function hubFinish(peers: readonly SealedLink[], timeoutMs: number): Promise<void> {
  await Promise.all(
    peers.map((l) => l.nextFrame((f) => f.type === FrameType.data && f.requestId === DONE_REQUEST_ID, timeoutMs)),
  )
}

/** A rank > 0, after the last round: says so, and waits until the socket has taken that frame. */
export async function spokeFinish(hub: SealedLink, timeoutMs: number): Promise<void> {
  hub.send(FrameType.data, new Uint8Array(0), { requestId: DONE_REQUEST_ID })
  const until = Date.now() + timeoutMs
  while (hub.queuedBytes > 0 && !hub.closed && Date.now() < until) await Bun.sleep(5)
}
