/** POST /admin/stop: what `dbcluster cluster stop` asks the head (docs/cluster.md §Stopping), behind --api-key like
 * every route. Body (optional): `{"now": false, "drain_timeout_s": 60}`. The head admits nothing new at once (503),
 * lets running requests finish for at most the drain timeout (`now`: none), stops its stages and ends. Answers 202
 * `{stopping, started, now, drain_timeout_s, running}` at once; `started` is false when a stop was already under way
 * (a `now` then cuts its drain). */
import type { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { nodeStop, type DrainingScheduler, type NodeStop } from '../cluster/cluster-stop.ts'
import { ApiError, invalid } from './errors.ts'
import { requestBody } from './request-schema.ts'

/** Seconds running requests get to finish when the request names no drain timeout. */
export const DEFAULT_DRAIN_S = 60

/** The body, published by openapi.ts; a field it does not name is refused whatever its value. */
export const STOP_REQUEST = requestBody(
  'StopRequest',
  'POST /admin/stop: how the head stops its cluster (optional: an empty body drains for the default time)',
  {
    now: { type: 'boolean', default: false, description: 'end running requests at once instead of draining them' },
    drain_timeout_s: {
      type: 'number',
      minimum: 0,
      default: DEFAULT_DRAIN_S,
      description: 'seconds running requests get to finish before the stages are stopped',
    },
  },
  [],
  'none',
  true,
)
const FIELDS = new Set(Object.keys(STOP_REQUEST.fields))

export function addStopRoute(app: Hono, deps: { scheduler: DrainingScheduler }, stop: NodeStop = nodeStop): void {
  const tooLarge = () => {
    throw new ApiError(413, 'a stop request body is at most 4096 bytes', 'invalid_request_error', 'request_too_large')
  }
  app.post('/admin/stop', bodyLimit({ maxSize: 4096, onError: tooLarge }), async (c) => {
    const body = parseBody(await c.req.text())
    const now = body.now ?? false
    const drainS = body.drain_timeout_s ?? DEFAULT_DRAIN_S
    if (typeof now !== 'boolean') throw invalid('now must be true or false', 'now')
    if (typeof drainS !== 'number' || !Number.isFinite(drainS) || drainS < 0)
      throw invalid('drain_timeout_s must be a number of seconds >= 0', 'drain_timeout_s')
    const running = deps.scheduler.running
    const started = stop.request(deps.scheduler, { now, drainMs: drainS * 1000 })
    const status = stop.status
    return c.json(
      { stopping: true, started, now: status?.now ?? now, drain_timeout_s: status?.drain_timeout_s ?? drainS, running },
      202,
    )
  })
}

function parseBody(text: string): Record<string, unknown> {
  if (!text.trim()) return {}
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    throw new ApiError(400, 'the request body is not valid JSON', 'invalid_request_error', 'invalid_json')
  }
  if (!body || typeof body !== 'object' || Array.isArray(body))
    throw new ApiError(400, 'the request body must be a JSON object', 'invalid_request_error', 'invalid_json')
  for (const key of Object.keys(body))
    if (!FIELDS.has(key)) throw invalid(`unknown field '${key}': a stop takes now and drain_timeout_s`, key)
  return body as Record<string, unknown>
}
