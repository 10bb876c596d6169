/** How a group's ranks meet over the sealed link: rank 0 listens, every other rank dials it (retrying until rank 0 is up).
 * By default (rdma-ping, the MLX meeting) a peer whose serial is pinned must present the pinned key and an unpinned peer
 * is accepted with its fingerprint printed, because only generated test data or addresses cross; a group that carries
 * activations (sealed tensor parallel) passes `authorize` and trusts pinned keys only. */
import { DbcError } from '../errors.ts'
import type { CipherName } from '../link/aead-channel.ts'
import { connectLink, listenLinks, type LinkOptions, type SealedLink } from '../link/tcp-link.ts'
import { fingerprint, type Identity } from '../trust/identity.ts'
import type { Authorizer, PinStore } from '../trust/pinned-keys.ts'

export interface RankLinkOptions {
  identity: Identity
  serial: string
  pins?: PinStore
  onPeer?: (serial: string, fingerprint: string, pinned: boolean) => void
  /** Replaces the accept-unpinned rule (e.g. authorizeByPins). */
  authorize?: Authorizer
  /** Bound into every handshake and frame (default 'rdma-ping'). */
  clusterId?: string
  /** The flag the other ranks take rank 0's address with, for the hint when they do not come (default --peer). */
  peerFlag?: string
  /** The meeting link's AEAD (default AES-256-GCM); a rank that names another is refused in the handshake. */
  cipher?: CipherName
}

function linkOptions(o: RankLinkOptions): LinkOptions {
  return {
    identity: o.identity,
    serial: o.serial,
    clusterId: o.clusterId ?? 'rdma-ping',
    cipher: o.cipher,
    maxFrameBytes: 256 * 1024 * 1024 + 64,
    authorize:
      o.authorize ??
      ((serial, key) => {
        const pin = o.pins?.get(serial)
        if (pin && pin.publicKey !== Buffer.from(key).toString('base64')) return 'key-mismatch'
        o.onPeer?.(serial, fingerprint(key), Boolean(pin))
        return 'authorized'
      }),
  }
}

/** Rank 0: waits for worldSize-1 peers, or fails after timeoutMs naming how many came. */
export async function acceptRanks(
  host: string,
  port: number,
  worldSize: number,
  timeoutMs: number,
  o: RankLinkOptions,
  onListening?: (port: number) => void,
): Promise<{ links: SealedLink[]; stop: () => void }> {
  const links: SealedLink[] = []
  let done: () => void = () => {}
  const all = new Promise<void>((resolve) => (done = resolve))
  const listener = listenLinks(host, port, linkOptions(o), (link) => {
    if (links.length >= worldSize - 1) return link.close()
    links.push(link)
    if (links.length === worldSize - 1) done()
  })
  onListening?.(listener.port)
  let timer: Timer | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new DbcError(
            'E_RDMA_PING_NO_PEER',
            `${links.length} of ${worldSize - 1} peers connected to ${host}:${listener.port} within ${timeoutMs / 1000} s`,
            `start the other ranks with ${o.peerFlag ?? '--peer'} <this host>:${listener.port}, and check the firewall`,
          ),
        ),
      timeoutMs,
    )
  })
  try {
    await Promise.race([all, timeout])
  } catch (e) {
    listener.stop(true)
    for (const l of links) l.close()
    throw e
  } finally {
    clearTimeout(timer)
  }
  return { links, stop: () => listener.stop(true) }
}

/** Rank > 0: dials rank 0 until it answers or timeoutMs passes. */
export async function dialRankZero(
  host: string,
  port: number,
  timeoutMs: number,
  o: RankLinkOptions,
): Promise<SealedLink> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      return await connectLink(host, port, linkOptions(o))
    } catch (e) {
      last = e
      if (e instanceof DbcError && e.code !== 'E_CONNECT') throw e
      await Bun.sleep(200)
    }
  }
  const why = last instanceof Error ? last.message : 'no answer'
  throw new DbcError(
    'E_RDMA_PING_NO_PEER',
    `rank 0 at ${host}:${port} did not answer within ${timeoutMs / 1000} s (${why})`,
    'start rank 0 first or together, and check --peer and the firewall',
  )
}
