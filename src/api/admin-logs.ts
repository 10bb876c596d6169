/** GET /admin/logs: the recent log lines of this node and of the members it reaches (`dbcluster cluster logs`), behind
 * --api-key like every route. `after=RANK:SEQ,…` asks only for lines after a rank's SEQ (what a follower has), `limit`
 * caps each node's lines (the newest kept). */
import type { Hono } from 'hono'
import type { NodeLogs } from '../cluster/log-messages.ts'
import { LOG_LINES } from '../log-ring.ts'
import { invalid } from './errors.ts'

export type LogsSource = (after: ReadonlyMap<number, number>, limit: number) => Promise<NodeLogs[]>

/** Lines per node when the request names no limit. */
export const DEFAULT_LOG_LIMIT = 200

export function parseAfter(value: string | undefined): Map<number, number> {
  const after = new Map<number, number>()
  if (!value) return after
  for (const part of value.split(',')) {
    const m = /^(\d{1,4}):(\d{1,15})$/.exec(part.trim())
    if (!m) throw invalid(`'after' must be RANK:SEQ pairs separated by commas, got '${part}'`, 'after')
    after.set(Number(m[1]), Number(m[2]))
  }
  return after
}

export function parseLimit(value: string | undefined): number {
  if (value === undefined) return DEFAULT_LOG_LIMIT
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1 || n > LOG_LINES)
    throw invalid(`'limit' must be an integer in [1, ${LOG_LINES}], got '${value}'`, 'limit')
  return n
}

export function addLogsRoute(app: Hono, logs: LogsSource): void {
  app.get('/admin/logs', async (c) => {
    const after = parseAfter(c.req.query('after'))
    const limit = parseLimit(c.req.query('limit'))
    return c.json({ nodes: await logs(after, limit) })
  })
}
