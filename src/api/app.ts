/** The OpenAI-compatible HTTP API of the head: a Hono app built from its dependencies (no port bound here). */
import { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { ownLogs } from '../cluster/log-messages.ts'
import type { ServingMetrics } from '../engine/metrics.ts'
import type { Scheduler } from '../engine/scheduler.ts'
import type { ModelTokenizer } from '../model/tokenizer.ts'
import { chatCompletions } from './chat-completions.ts'
import { completions } from './completions.ts'
import { addDashboardRoutes } from './dashboard.ts'
import { addLogsRoute, type LogsSource } from './admin-logs.ts'
import { addStopRoute } from './admin-stop.ts'
import { apiKeyCheck, setTenant } from './api-key.ts'
import { addOpenApiRoutes } from './openapi.ts'
import { ApiError, errorResponse } from './errors.ts'
import type { HttpBindings } from './http-server.ts'
import { ThroughputHistory } from './throughput-history.ts'

export interface AppDeps {
  scheduler: Scheduler
  tokenizer: ModelTokenizer
  modelId: string
  metrics: ServingMetrics
  /** Extra fields for /health (backend, cluster members, …). */
  health: () => Record<string, unknown>
  /** When set, every route needs it (Bearer, or Basic with the key as password); see publicHealth. */
  apiKey?: string
  /** With apiKey: GET /health stays open to anyone, answering only {status} (for load balancers). */
  publicHealth?: boolean
  maxBodyBytes?: number
  /** Recent log lines of this node and the members it reaches (GET /admin/logs); default: this process's own. */
  logs?: LogsSource
  /** The dashboard's tokens/s history (serve-api.ts samples it on a timer); default: sampled by snapshots alone. */
  throughput?: ThroughputHistory
}

export function createApp(deps: AppDeps): Hono {
  const app = new Hono()
  const startedAt = Date.now()
  const created = Math.floor(startedAt / 1000)

  app.onError((error, c) => errorResponse(c, error))
  app.notFound((c) =>
    errorResponse(c, new ApiError(404, `no route ${c.req.method} ${c.req.path}`, 'invalid_request_error', 'not_found')),
  )

  // with a key, every route needs it: /health names members, fingerprints and memory; /metrics and the dashboard too
  const authorized = deps.apiKey ? apiKeyCheck(deps.apiKey) : () => ''
  app.use('*', async (c, next) => {
    const tenant = authorized(c.req.header('authorization'))
    if (tenant !== null) return (setTenant(c.req.raw, tenant), next())
    if (deps.publicHealth && c.req.method === 'GET' && c.req.path === '/health') {
      const degraded = deps.scheduler.degraded
      return c.json(
        { status: degraded ? 'degraded' : 'ok' },
        degraded ? 503 : 200,
        degraded ? { 'retry-after': '5' } : {},
      )
    }
    const error = new ApiError(
      401,
      'missing or wrong API key: send Authorization: Bearer <key>',
      'invalid_request_error',
      'invalid_api_key',
    )
    const response = errorResponse(c, error)
    // a browser opening the dashboard or the docs gets its own password prompt (the key as the password)
    if (c.req.path.startsWith('/dashboard') || c.req.path === '/docs')
      response.headers.set('www-authenticate', 'Basic realm="dbcluster", charset="UTF-8"')
    return response
  })
  app.use(
    '/v1/*',
    bodyLimit({
      maxSize: deps.maxBodyBytes ?? 1024 * 1024,
      onError: () => {
        throw new ApiError(
          413,
          `request body exceeds ${deps.maxBodyBytes ?? 1024 * 1024} bytes`,
          'invalid_request_error',
          'request_too_large',
        )
      },
    }),
  )

  const json = async (c: { req: { json: () => Promise<unknown> }; env: unknown }): Promise<Record<string, unknown>> => {
    let body: unknown
    try {
      body = await c.req.json()
    } catch {
      throw new ApiError(400, 'the request body is not valid JSON', 'invalid_request_error', 'invalid_json')
    }
    if (!body || typeof body !== 'object' || Array.isArray(body))
      throw new ApiError(400, 'the request body must be a JSON object', 'invalid_request_error', 'invalid_json')
    // the whole request is in: its answer may take minutes to compute, so the idle timeout no longer applies
    ;(c.env as Partial<HttpBindings> | undefined)?.holdOpen?.()
    return body as Record<string, unknown>
  }

  app.post('/v1/chat/completions', async (c) => chatCompletions(c, { ...deps, body: await json(c) }))
  app.post('/v1/completions', async (c) => completions(c, { ...deps, body: await json(c) }))
  // the serving context (--max-context, bounded by every stage's KV slots) under both names clients look for
  app.get('/v1/models', (c) => {
    const context = deps.scheduler.pipeline.maxLen
    const model = { id: deps.modelId, object: 'model', created, owned_by: 'dbcluster' }
    return c.json({ object: 'list', data: [{ ...model, context_length: context, max_model_len: context }] })
  })
  app.get('/health', (c) => {
    const degraded = deps.scheduler.degraded
    return c.json(
      {
        status: degraded ? 'degraded' : 'ok',
        reason: degraded,
        model: deps.modelId,
        queue_depth: deps.scheduler.queueDepth,
        running: deps.scheduler.running,
        ...deps.health(),
      },
      degraded ? 503 : 200,
    )
  })
  // where each request stands (no prompt text), behind --api-key like every route
  app.get('/queue', (c) =>
    c.json({
      running: deps.scheduler.running,
      waiting: deps.scheduler.queueDepth,
      requests: deps.scheduler.requests(),
    }),
  )
  app.get('/metrics', (c) => c.text(deps.metrics.render(), 200, { 'Content-Type': 'text/plain; version=0.0.4' }))
  addDashboardRoutes(app, { ...deps, throughput: deps.throughput ?? new ThroughputHistory(), startedAt })
  addStopRoute(app, deps)
  addLogsRoute(app, deps.logs ?? (async (after, limit) => [ownLogs(0, deps.modelId, after, limit)]))
  // last: the document lists every route registered above (and refuses to build if one has no entry)
  addOpenApiRoutes(app, { apiKey: Boolean(deps.apiKey), publicHealth: Boolean(deps.apiKey && deps.publicHealth) })
  return app
}
