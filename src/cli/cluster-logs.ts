/** `dbcluster cluster logs`: every node's recent log lines gathered through the head (GET /admin/logs), each prefixed
 * by its node; --follow keeps asking for what came after, --node keeps one node's. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import type { NodeLogs } from '../cluster/log-messages.ts'
import { DbcError, UsageError } from '../errors.ts'
import { LOG_LINES } from '../log-ring.ts'
import { interruptOnSignals } from './interrupt-signal.ts'
import { positiveInt } from './number-list.ts'

async function readLogs(url: string, key: string | undefined, after: Map<number, number>, limit: number) {
  const query = new URLSearchParams({ limit: String(limit) })
  if (after.size) query.set('after', [...after].map(([rank, seq]) => `${rank}:${seq}`).join(','))
  let res: Response
  try {
    res = await fetch(`${url}/admin/logs?${query}`, { headers: key ? { authorization: `Bearer ${key}` } : {} })
  } catch (error) {
    throw new DbcError(
      'E_UNREACHABLE',
      `cannot reach ${url}: ${(error as Error).message}`,
      'is the head running there?',
    )
  }
  if (res.status === 401)
    throw new UsageError(`${url} needs its API key`, 'pass --api-key KEY (or set DBCLUSTER_API_KEY)')
  if (res.status === 404)
    throw new DbcError('E_NO_LOGS', `${url} has no /admin/logs`, 'is it a dbcluster head of this release?')
  const body = (await res.json()) as { nodes?: NodeLogs[]; error?: { message: string } }
  if (!res.ok || !body.nodes) throw new DbcError('E_LOGS', `${url}: ${body.error?.message ?? `HTTP ${res.status}`}`)
  return body.nodes
}

/** One node's new lines as printed: `[node] HH:MM:SS.mmm text`, or one line saying why there are none. */
export function renderLogs(nodes: readonly NodeLogs[], wanted: (n: NodeLogs) => boolean): string[] {
  const lines: string[] = []
  for (const n of nodes) {
    if (!wanted(n)) continue
    if (n.error) lines.push(`[${n.node}] (no lines: ${n.error})`)
    for (const l of n.lines) lines.push(`[${n.node}] ${new Date(l.at).toISOString().slice(11, 23)} ${l.text}`)
  }
  return lines
}

export default defineCommand({
  meta: {
    name: 'logs',
    description: 'Recent log lines of every node of a running cluster, gathered through the head and prefixed by node',
  },
  args: {
    url: { type: 'string', description: 'The head’s API URL', default: 'http://127.0.0.1:8080' },
    node: { type: 'string', description: 'Only this node’s lines: its rank or its name', valueHint: 'N' },
    follow: {
      type: 'boolean',
      description: 'Keep printing new lines as they come (Ctrl-C to stop); a head that goes away ends it with a line',
      default: false,
    },
    lines: {
      type: 'string',
      description: `Lines per node at first (each node keeps its last ${LOG_LINES})`,
      default: '100',
      valueHint: 'N',
    },
    interval: { type: 'string', description: 'With --follow: seconds between asks', default: '1', valueHint: 'S' },
    'api-key': { type: 'string', description: 'The head’s --api-key, when it has one (or set DBCLUSTER_API_KEY)' },
  },
  async run({ args }) {
    const limit = positiveInt(args.lines, 'lines')
    if (limit > LOG_LINES) throw new UsageError(`--lines is at most ${LOG_LINES} (what each node keeps)`)
    const interval = Number(args.interval)
    if (!(interval > 0)) throw new UsageError(`--interval must be a positive number of seconds, got '${args.interval}'`)
    const key = args['api-key'] ?? process.env.DBCLUSTER_API_KEY
    const url = args.url.replace(/\/+$/, '')
    const wanted = (n: NodeLogs) => args.node === undefined || String(n.rank) === args.node || n.node === args.node
    const after = new Map<number, number>()
    let nodes = await readLogs(url, key, after, limit)
    if (args.node !== undefined && !nodes.some(wanted))
      throw new UsageError(
        `no node '${args.node}' in this cluster`,
        `its nodes: ${nodes.map((n) => `${n.rank} (${n.node})`).join(', ')}`,
      )
    const interrupt = interruptOnSignals()
    try {
      for (;;) {
        for (const line of renderLogs(nodes, wanted)) console.log(line)
        for (const n of nodes) after.set(n.rank, n.next)
        if (!args.follow || interrupt.signal.aborted) return
        await new Promise((resolve) => setTimeout(resolve, interval * 1000))
        if (interrupt.signal.aborted) return
        try {
          // a node that restarted numbers from 1 again: its lines after the old number would never come
          nodes = await readLogs(url, key, after, LOG_LINES)
        } catch (error) {
          if (error instanceof DbcError && error.code === 'E_UNREACHABLE')
            return void consola.info(`the head at ${url} has gone; no more lines`)
          throw error
        }
        for (const n of nodes) if (n.next < (after.get(n.rank) ?? 0)) after.set(n.rank, 0)
      }
    } finally {
      interrupt.dispose()
    }
  },
})
