/** Who is in a pipeline cluster and which rank this node is — from --peers/--rank, or found on the cable (--discover) —
 * and this node's coordinator session, which registers it so its peers can pin its key. */
import { parsePeers } from '../cluster/membership.ts'
import type { RingAddress } from '../cluster/ring.ts'
import { CoordinatorClient } from '../coordinator/client.ts'
import { registerNode } from '../coordinator/node-registration.ts'
import { formCluster } from '../discovery/form-cluster.ts'
import { UsageError } from '../errors.ts'
import type { Identity } from '../trust/identity.ts'
import type { PinStore } from '../trust/pinned-keys.ts'

export interface MembershipRequest {
  peers?: string
  rank: number
  discover?: { nodes: number; iface?: string; linkPort: number }
}

/** Null when this node serves alone. */
export async function clusterMembership(
  r: MembershipRequest,
  identity: Identity,
  serial: string,
  pins: PinStore,
  coordinator: CoordinatorClient | undefined,
): Promise<{ peers: RingAddress[]; rank: number } | null> {
  if (r.discover && r.peers) throw new UsageError('give either --peers (static membership) or --discover, not both')
  if (r.peers) {
    const peers = parsePeers(r.peers)
    if (!Number.isInteger(r.rank) || r.rank < 0 || r.rank >= peers.length)
      throw new UsageError(`--rank must be 0..${peers.length - 1}`)
    return { peers, rank: r.rank }
  }
  if (!r.discover) return null
  const stop = new AbortController()
  const onSignal = () => stop.abort()
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    const formed = await formCluster({
      identity,
      serial,
      linkPort: r.discover.linkPort,
      iface: r.discover.iface,
      nodes: r.discover.nodes,
      pins,
      coordinator,
      signal: stop.signal,
    })
    return { peers: formed.peers, rank: formed.rank }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

/** With --coordinator on a cluster node: the client (for pinning peers) after registering this node; a coordinator that
 * refuses or cannot be reached is reported and the node goes on with the pins it has. */
export async function coordinatorSession(
  url: string,
  token: string | undefined,
  identity: Identity,
  serial: string,
  pins: PinStore,
  options: { requestRdma?: boolean; mdaChain?: string[] } = {},
): Promise<CoordinatorClient> {
  if (!token)
    throw new UsageError(
      '--coordinator needs --coordinator-token (or DBCLUSTER_COORDINATOR_TOKEN)',
      "create one with 'dbcluster coordinator token create --account NAME' where the coordinator runs",
    )
  const client = new CoordinatorClient({ url, token, pins })
  await registerNode(client, identity, serial, options).registered
  return client
}
