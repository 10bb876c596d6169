/** The cluster `dbcluster cluster setup` remembered ($DBCLUSTER_HOME/peers.json, 0600): every node's serial and link
 * address, in rank order, and which one is this node. Ranks follow the addresses (ascending IPv4, then port), the rule
 * discovery elects by, so every node that ran setup with the same machines derives the same order on its own. */
import { join } from 'node:path'
import { existsSync } from 'node:fs'
import { DbcError } from '../errors.ts'
import { ipv4ToNumber } from '../discovery/link-local.ts'
import { stateDir } from '../state-dir.ts'
import { readPrivateFile, writePrivateFile } from '../trust/private-file.ts'

export interface RememberedNode {
  serial: string
  host: string
  port: number
}

export interface RememberedPeers {
  /** Rank order. */
  nodes: RememberedNode[]
  /** This node's index in `nodes`. */
  rank: number
}

export const rememberedPeersFile = (): string => join(stateDir(), 'peers.json')

const byAddress = (a: RememberedNode, b: RememberedNode) =>
  ipv4ToNumber(a.host) - ipv4ToNumber(b.host) || a.port - b.port

/** Adds (or updates, by serial) `peer` to what is remembered, with `self` as this node; returns the new cluster. */
export function rememberPeer(path: string, self: RememberedNode, peer: RememberedNode): RememberedPeers {
  const before = loadRememberedPeers(path)
  const others = (before?.nodes ?? []).filter((n, i) => i !== before?.rank && n.serial !== peer.serial)
  const nodes = [...others, peer, self].sort(byAddress)
  for (let i = 1; i < nodes.length; i++)
    if (byAddress(nodes[i - 1]!, nodes[i]!) === 0)
      throw new DbcError(
        'E_PEERS_FILE',
        `${nodes[i - 1]!.serial} and ${nodes[i]!.serial} would both be at ${nodes[i]!.host}:${nodes[i]!.port}`,
        'give each node its own link address (--self-ip / --link-port here, --peer-ip / --peer-port for the peer)',
      )
  const remembered = { nodes, rank: nodes.indexOf(self) }
  writePrivateFile(path, JSON.stringify(remembered, null, 2))
  return remembered
}

/** Null when setup never ran; a damaged file is an error, never a silent single node. */
export function loadRememberedPeers(path: string): RememberedPeers | null {
  if (!existsSync(path)) return null
  const bad = () =>
    new DbcError('E_PEERS_FILE', `${path} is not a peer list`, `run 'dbcluster cluster setup' again, or remove ${path}`)
  let raw: unknown
  try {
    raw = JSON.parse(readPrivateFile(path))
  } catch (error) {
    if (error instanceof DbcError) throw error
    throw bad()
  }
  const r = raw as Partial<RememberedPeers> | null
  if (!r || !Array.isArray(r.nodes) || !Number.isInteger(r.rank) || r.rank! < 0 || r.rank! >= r.nodes.length)
    throw bad()
  for (const n of r.nodes as unknown[]) {
    const node = n as Partial<RememberedNode> | null
    if (!node || typeof node.serial !== 'string' || typeof node.host !== 'string' || !Number.isInteger(node.port))
      throw bad()
  }
  return { nodes: r.nodes.map((n) => ({ serial: n.serial, host: n.host, port: n.port })), rank: r.rank! }
}

/** The --peers list of a remembered cluster. */
export const peersList = (r: RememberedPeers): string => r.nodes.map((n) => `${n.host}:${n.port}`).join(',')
