/** `serve --peers` with no list, or `serve` without --peers once `cluster setup` ran: the remembered cluster, and this
 * node's rank in it unless --rank says otherwise. Said on the console, so a node never joins a cluster unannounced. */
import { consola } from 'consola'
import { loadRememberedPeers, peersList, rememberedPeersFile } from '../cluster/remembered-peers.ts'
import { UsageError } from '../errors.ts'

export function peersFromSetup(
  args: { peers?: string; rank: string; discover?: boolean; tp: string },
  rawArgs: string[],
): { peers?: string; rank?: string } {
  if (args.peers?.startsWith('-'))
    throw new UsageError(
      `--peers took '${args.peers}' as its list`,
      "to use the peers 'dbcluster cluster setup' remembered, write --peers= or leave --peers out",
    )
  if (args.peers) return {}
  const omitted = args.peers === undefined
  // a node that forms its cluster another way never picks up the remembered one
  if (omitted && (args.discover || Number(args.tp) > 1)) return {}
  const path = rememberedPeersFile()
  const remembered = loadRememberedPeers(path)
  if (!remembered) {
    if (omitted) return {}
    throw new UsageError(
      `--peers has no list, and no cluster is remembered (${path})`,
      "give --peers host:port,host:port (rank order), or run 'dbcluster cluster setup' first",
    )
  }
  const rankGiven = rawArgs.some((a) => a === '--rank' || a.startsWith('--rank='))
  const rank = rankGiven ? args.rank : String(remembered.rank)
  const list = peersList(remembered)
  consola.info(
    `cluster from ${path} (cluster setup): --peers ${list} --rank ${rank}${omitted ? `; to serve alone, move ${path} away` : ''}`,
  )
  return { peers: list, rank }
}
