/** `dbcluster cluster logs` on a head: its own lines from its ring, and its stages' asked over their control links. */
import type { ClusterPlanner } from '../cluster/cluster-planner.ts'
import { askLogs, ownLogs, type NodeLogs } from '../cluster/log-messages.ts'

export { ownLogs }

/** How long the head waits for a stage's lines before it reports that stage as not answering. */
const STAGE_LOGS_MS = 3000

/** The head's lines and every joined stage's, in rank order; a stage that does not answer gets an entry saying why. */
export async function clusterLogs(
  planner: ClusterPlanner,
  head: string,
  after: ReadonlyMap<number, number>,
  limit: number,
): Promise<NodeLogs[]> {
  const stages = [...planner.joined].map(([rank, j]) =>
    j.link.closed
      ? Promise.resolve({
          rank,
          node: j.serial,
          lines: [],
          next: after.get(rank) ?? 0,
          error: 'its control link is down',
        })
      : askLogs(j.link, { rank, node: j.serial }, { after: after.get(rank) ?? 0, limit }, STAGE_LOGS_MS),
  )
  return [ownLogs(0, head, after, limit), ...(await Promise.all(stages))].sort((a, b) => a.rank - b.rank)
}
