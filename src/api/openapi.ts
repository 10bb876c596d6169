/** GET /openapi.json: an OpenAPI 3.1 document of the routes the app registers, built from the request schemas the
 * handlers check bodies with (request-schema.ts, admin-stop.ts). Each route needs an entry in OPERATIONS: a route
 * without one, or an entry without a route, stops createApp, so the document cannot drift from the app. GET /docs
 * renders the same document as a page (docs-page.ts). */
import type { Hono } from 'hono'
import { VERSION } from '../version.ts'
import { STOP_REQUEST } from './admin-stop.ts'
import { renderDocsPage } from './docs-page.ts'
import { bodySchema, CHAT_REQUEST, COMPLETION_REQUEST, type JsonSchema, type RequestBody } from './request-schema.ts'

export type OpenApiDocument = {
  openapi: string
  info: { title: string; version: string; description: string }
  paths: Record<string, Record<string, JsonSchema>>
  components: Record<string, Record<string, JsonSchema>>
  security?: Record<string, string[]>[]
}

type Responses = Record<string, { description: string; content?: Record<string, { schema: JsonSchema }> }>

interface Operation {
  summary: string
  description: string
  tag: 'OpenAI' | 'Operations' | 'Documentation'
  body?: RequestBody
  /** Query parameters (OpenAPI parameter objects). */
  parameters?: JsonSchema[]
  responses: Responses
}

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` })
const json = (description: string, schema: JsonSchema = { type: 'object' }) => ({
  description,
  content: { 'application/json': { schema } },
})
const error = (description: string) => json(description, ref('Error'))
const sse = (description: string) => ({ 'text/event-stream': { schema: { type: 'string', description } } })

const ERROR: JsonSchema = {
  type: 'object',
  description: 'every error: OpenAI-style, with the HTTP status that fits it',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['message', 'type', 'code', 'param'],
      properties: {
        message: { type: 'string', description: 'what happened, then what to do next' },
        type: { type: 'string', examples: ['invalid_request_error', 'rate_limit_error', 'service_unavailable'] },
        code: { type: ['string', 'null'], examples: ['unsupported_parameter', 'invalid_value', 'queue_full'] },
        param: { type: ['string', 'null'], description: 'the request field at fault, as a path: messages[0].name' },
      },
    },
  },
}

/** What a completion may answer besides 200; every route may also answer 401 (see securityFor). */
const COMPLETION_ERRORS: Responses = {
  '400': error('a field not honoured (unsupported_parameter), an invalid value (invalid_value) or a prompt too long'),
  '404': error('the request names another model (model_not_found)'),
  '413': error('the body is larger than the server takes (request_too_large)'),
  '429': error('the queue is full (queue_full); retry after the Retry-After header'),
  '503': error('the cluster is degraded or shutting down; retry after the Retry-After header'),
  '504': error('the request timed out in the queue or while generating'),
}

const completion = (object: string, body: RequestBody, summary: string, description: string): Operation => ({
  summary,
  description,
  tag: 'OpenAI',
  body,
  responses: {
    '200': {
      description: `a ${object} object, or with stream: true Server-Sent Events of ${object} chunks ending with data: [DONE]`,
      content: {
        'application/json': { schema: { type: 'object', description: `OpenAI ${object}` } },
        ...sse(`data: {${object} chunk}, then data: [DONE]`),
      },
    },
    ...COMPLETION_ERRORS,
  },
})

/** Every route the app serves, by `METHOD path`. */
const OPERATIONS: Record<string, Operation> = {
  'POST /v1/chat/completions': completion(
    'chat.completion',
    CHAT_REQUEST,
    'Chat completion',
    "messages (and tools) rendered with the model's chat template; tool calls come back as tool_calls",
  ),
  'POST /v1/completions': completion(
    'text_completion',
    COMPLETION_REQUEST,
    'Text completion',
    'a raw prompt (text or token ids), no chat template',
  ),
  'GET /v1/models': {
    summary: 'The served model',
    description: 'one model, with the serving context (prompt plus max_tokens) as context_length and max_model_len',
    tag: 'OpenAI',
    responses: {
      '200': json('the model list', {
        type: 'object',
        required: ['object', 'data'],
        properties: {
          object: { const: 'list' },
          data: {
            type: 'array',
            items: {
              type: 'object',
              required: ['id', 'object', 'created', 'owned_by', 'context_length', 'max_model_len'],
              properties: {
                id: { type: 'string' },
                object: { const: 'model' },
                created: { type: 'integer' },
                owned_by: { type: 'string' },
                context_length: { type: 'integer' },
                max_model_len: { type: 'integer' },
              },
            },
          },
        },
      }),
    },
  },
  'GET /health': {
    summary: 'Health of the node and its cluster',
    description:
      'status, model, queue, and what the node reports: backend, nodes, layers, members, ring, tensor_parallel ' +
      '{ranks, transport, sampling}, cluster_trust, kv_slots_free, prefix_cache, stopping',
    tag: 'Operations',
    responses: {
      '200': json('serving', {
        type: 'object',
        required: ['status'],
        properties: { status: { enum: ['ok', 'degraded'] }, reason: { type: ['string', 'null'] } },
      }),
      '503': json('degraded: the reason says why; Retry-After: 5'),
    },
  },
  'GET /queue': {
    summary: 'Where each request stands',
    description: 'running and waiting requests, oldest first; never a prompt or an answer',
    tag: 'Operations',
    responses: {
      '200': json('the queue', {
        type: 'object',
        required: ['running', 'waiting', 'requests'],
        properties: {
          running: { type: 'integer' },
          waiting: { type: 'integer' },
          requests: {
            type: 'array',
            items: {
              type: 'object',
              properties: {
                id: { type: 'string' },
                state: { enum: ['waiting', 'prefill', 'decode', 'suspended'] },
                age_ms: { type: 'number' },
                prompt_tokens: { type: 'integer' },
                generated_tokens: { type: 'integer' },
              },
            },
          },
        },
      }),
    },
  },
  'GET /metrics': {
    summary: 'Prometheus metrics',
    description: 'requests by outcome, tokens, queue depth, batch size, latency histograms, link errors, HTTP limits',
    tag: 'Operations',
    responses: {
      '200': {
        description: 'Prometheus text format 0.0.4',
        content: { 'text/plain': { schema: { type: 'string' } } },
      },
    },
  },
  'GET /admin/logs': {
    summary: 'Recent log lines of every node',
    description:
      'each node’s last lines (the head’s own, a pipeline stage’s asked over its control link; a stage that does not ' +
      'answer gets an entry with error); what `dbcluster cluster logs` calls, and polls with after= to follow',
    tag: 'Operations',
    parameters: [
      {
        name: 'after',
        in: 'query',
        description: 'RANK:SEQ pairs, comma-separated: only lines numbered after SEQ on that rank',
        schema: { type: 'string', pattern: '^\\d{1,4}:\\d{1,15}(,\\d{1,4}:\\d{1,15})*$' },
      },
      {
        name: 'limit',
        in: 'query',
        description: 'the most lines per node (the newest)',
        schema: { type: 'integer', minimum: 1, maximum: 2000, default: 200 },
      },
    ],
    responses: {
      '200': json('each node’s lines', {
        type: 'object',
        required: ['nodes'],
        properties: {
          nodes: {
            type: 'array',
            items: {
              type: 'object',
              required: ['rank', 'node', 'lines', 'next'],
              properties: {
                rank: { type: 'integer' },
                node: { type: 'string' },
                next: { type: 'integer', description: 'the node’s last line number: pass it as after= next time' },
                error: { type: 'string', description: 'why this node’s lines could not be read' },
                lines: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: {
                      seq: { type: 'integer' },
                      at: { type: 'number', description: 'ms since the epoch' },
                      stream: { enum: ['out', 'err'] },
                      text: { type: 'string' },
                    },
                  },
                },
              },
            },
          },
        },
      }),
      '400': error('after or limit malformed (invalid_value)'),
    },
  },
  'POST /admin/stop': {
    summary: 'Stop the cluster',
    description:
      'a pipeline head admits nothing new (503), drains running requests, stops every stage and exits; what ' +
      '`dbcluster cluster stop` calls',
    tag: 'Operations',
    body: STOP_REQUEST,
    responses: {
      '202': json('the stop is under way (started: false when one already was)', {
        type: 'object',
        required: ['stopping', 'started', 'now', 'drain_timeout_s', 'running'],
        properties: {
          stopping: { const: true },
          started: { type: 'boolean' },
          now: { type: 'boolean' },
          drain_timeout_s: { type: 'number' },
          running: { type: 'integer' },
        },
      }),
      '400': error('an unknown field or an invalid value'),
      '413': error('the body is larger than 4096 bytes'),
    },
  },
  'GET /dashboard': {
    summary: 'Dashboard',
    description: 'a self-contained page: throughput, latency, topology, transport and trust, a chat box',
    tag: 'Operations',
    responses: { '200': { description: 'the page', content: { 'text/html': { schema: { type: 'string' } } } } },
  },
  'GET /dashboard/events': {
    summary: 'Dashboard snapshots',
    description: 'Server-Sent Events: one JSON snapshot of the head a second (docs/dashboard.md)',
    tag: 'Operations',
    responses: { '200': { description: 'the stream', content: sse('data: {snapshot}, once a second') } },
  },
  'GET /openapi.json': {
    summary: 'This document',
    description: 'OpenAPI 3.1, built from the request schemas the server checks bodies with',
    tag: 'Documentation',
    responses: { '200': json('the document') },
  },
  'GET /docs': {
    summary: 'This document as a page',
    description: 'the same document rendered as HTML, with no script and nothing loaded from elsewhere',
    tag: 'Documentation',
    responses: { '200': { description: 'the page', content: { 'text/html': { schema: { type: 'string' } } } } },
  },
}

export interface DocumentOptions {
  /** Routes need --api-key; with publicHealth, GET /health answers {status} without it. */
  apiKey: boolean
  publicHealth: boolean
}

const KEYED: Record<string, string[]>[] = [{ bearer: [] }, { basic: [] }]

/** The `METHOD path` of each route the app registers (middleware, registered for every method, is left out). */
export function registeredRoutes(routes: readonly { method: string; path: string }[]): string[] {
  return [...new Set(routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path}`))]
}

export function openApiDocument(
  routes: readonly { method: string; path: string }[],
  options: DocumentOptions,
): OpenApiDocument {
  const served = registeredRoutes(routes)
  const undocumented = served.filter((route) => !(route in OPERATIONS))
  const gone = Object.keys(OPERATIONS).filter((route) => !served.includes(route))
  if (undocumented.length || gone.length)
    throw new Error(
      `the OpenAPI document and the app disagree: ${[
        ...undocumented.map((r) => `${r} has no entry in OPERATIONS`),
        ...gone.map((r) => `OPERATIONS lists ${r}, which the app does not register`),
      ].join('; ')} (src/api/openapi.ts)`,
    )
  const paths: OpenApiDocument['paths'] = {}
  for (const route of served) {
    const [method, path] = route.split(' ') as [string, string]
    const op = OPERATIONS[route]!
    const responses: Responses = { ...op.responses }
    if (options.apiKey) responses['401'] = error('missing or wrong API key (invalid_api_key)')
    const open = options.publicHealth && route === 'GET /health'
    ;(paths[path] ??= {})[method.toLowerCase()] = {
      operationId: operationId(route),
      summary: op.summary,
      description: open ? `${op.description}. Without the key: {status} alone` : op.description,
      tags: [op.tag],
      ...(op.parameters && { parameters: op.parameters }),
      ...(op.body && {
        requestBody: {
          required: !op.body.optional,
          content: { 'application/json': { schema: ref(op.body.name) } },
        },
      }),
      responses,
      ...(open && { security: [{}, ...KEYED] }),
    }
  }
  const bodies = [CHAT_REQUEST, COMPLETION_REQUEST, STOP_REQUEST]
  return {
    openapi: '3.1.0',
    info: {
      title: 'dbcluster',
      version: VERSION,
      description:
        'The OpenAI-compatible API of a dbcluster head, and the routes that operate it. A request field the server ' +
        'does not honour is refused with 400 unsupported_parameter naming it; a null field asks for its default.',
    },
    paths,
    components: {
      schemas: { ...Object.fromEntries(bodies.map((b) => [b.name, bodySchema(b)])), Error: ERROR },
      ...(options.apiKey && {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer <--api-key>' },
          basic: { type: 'http', scheme: 'basic', description: 'any user name, the API key as the password' },
        },
      }),
    },
    ...(options.apiKey && { security: KEYED }),
  }
}

/** `POST /v1/chat/completions` → `postV1ChatCompletions`. */
const operationId = (route: string) =>
  route
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean)
    .map((word, i) => (i ? word[0]!.toUpperCase() + word.slice(1) : word))
    .join('')

/** Registers GET /openapi.json and GET /docs, then builds the document from every route registered so far: call it
 * after the app's last route. */
export function addOpenApiRoutes(app: Hono, options: DocumentOptions): OpenApiDocument {
  let document: OpenApiDocument | undefined
  let page: string | undefined
  app.get('/openapi.json', (c) => c.json(document!))
  app.get('/docs', (c) => c.html(page!))
  document = openApiDocument(app.routes, options)
  page = renderDocsPage(document)
  return document
}
