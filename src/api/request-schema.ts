/** The request bodies of the OpenAI routes as JSON Schema (draft 2020-12, the dialect of OpenAPI 3.1): the one place
 * that says which fields each endpoint honours, the type and bounds of each, and what it does. request-fields.ts
 * checks requests against these objects and openapi.ts publishes them; docs/api.md §Request fields explains them. */

/** A JSON Schema as plain data. */
export type JsonSchema = { readonly [keyword: string]: unknown }

/** One endpoint's body: its fields by name and which of them it needs. A field with a `const` says in its description
 * why only that value is honoured (the refusal quotes it). */
export interface RequestBody {
  readonly name: string
  readonly description: string
  readonly fields: Readonly<Record<string, JsonSchema>>
  readonly required: readonly string[]
  /** Any other field: accepted only as null ('null', the OpenAI routes), or refused whatever its value ('none'). */
  readonly others: 'null' | 'none'
  /** Whether the body may be left out altogether. */
  readonly optional?: boolean
}

/** The keywords request-fields.ts enforces on a field of one scalar type; a scalar field may use no others. */
export const SCALAR_KEYWORDS: ReadonlySet<string> = new Set([
  'type',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'const',
  'default',
  'description',
])
const SCALAR_TYPES = new Set(['string', 'boolean', 'integer', 'number'])

/** A field checked by request-fields.ts from its schema alone: one scalar `type`, with bounds or a `const`. The other
 * fields (arrays, objects, unions) are checked by their own parsers, and test/api/openapi.test.ts holds those parsers to
 * the schema. */
export const isScalar = (schema: JsonSchema): boolean =>
  typeof schema.type === 'string' && SCALAR_TYPES.has(schema.type)

/** A null value asks for the field's default, as if the field were absent (nested objects follow the same rule). */
const orNull = (schema: JsonSchema): JsonSchema => ({ anyOf: [schema, { type: 'null' }] })
const NULL: JsonSchema = { type: 'null' }

export function requestBody(
  name: string,
  description: string,
  fields: Record<string, JsonSchema>,
  required: string[],
  others: RequestBody['others'] = 'null',
  optional = false,
) {
  for (const [key, schema] of Object.entries(fields)) {
    if (typeof schema.description !== 'string') throw new Error(`request field '${key}' of ${name} has no description`)
    const unchecked = isScalar(schema) ? Object.keys(schema).filter((k) => !SCALAR_KEYWORDS.has(k)) : []
    if (unchecked.length) throw new Error(`scalar field '${key}' of ${name} uses unchecked keywords ${unchecked}`)
  }
  return { name, description, fields, required, others, optional } satisfies RequestBody
}

/** The JSON Schema of a whole body: its fields, each of which may be null unless it is required, and any other field
 * only as null (the OpenAI routes) or not at all. */
export function bodySchema(body: RequestBody): JsonSchema {
  return {
    type: 'object',
    description: body.description,
    required: body.required,
    properties: Object.fromEntries(
      Object.entries(body.fields).map(([key, schema]) => {
        const { description, ...rest } = schema
        return [key, body.required.includes(key) ? schema : { description, ...orNull(rest) }]
      }),
    ),
    additionalProperties: body.others === 'null' ? NULL : false,
  }
}

/** OpenAI's limits: `n` up to 8 here (each choice is a sequence of its own); `logit_bias` up to 1024 token ids. */
export const MAX_CHOICES = 8
export const MAX_LOGIT_BIAS = 1024

const tokenLimit = (description: string): JsonSchema => ({ type: 'integer', minimum: 1, description })
const penalty = (description: string): JsonSchema => ({
  type: 'number',
  minimum: -2,
  maximum: 2,
  default: 0,
  description,
})
const NAME = '^[A-Za-z0-9_-]{1,64}$'

/** Both endpoints: sampling, stopping, streaming, choices, log-probability bias, and `user`. */
const COMMON: Record<string, JsonSchema> = {
  model: { type: 'string', description: 'the served model (GET /v1/models); optional; another name is a 404' },
  max_tokens: tokenLimit(
    'the token limit (default 512 chat, 16 completions); prompt + limit must fit the serving context',
  ),
  max_completion_tokens: tokenLimit('the token limit under its newer name; it wins over max_tokens'),
  temperature: { type: 'number', minimum: 0, maximum: 2, default: 1, description: '0 is greedy decoding' },
  top_p: { type: 'number', exclusiveMinimum: 0, maximum: 1, default: 1, description: 'nucleus sampling' },
  top_k: { type: 'integer', minimum: 0, default: 0, description: 'keep the k most likely tokens (0: all)' },
  min_p: {
    type: 'number',
    minimum: 0,
    exclusiveMaximum: 1,
    default: 0,
    description: 'drop tokens less likely than min_p times the most likely one',
  },
  repetition_penalty: {
    type: 'number',
    exclusiveMinimum: 0,
    default: 1,
    description:
      'divides a positive logit (multiplies a negative one) of each token among the last 64, prompt included',
  },
  seed: { type: 'integer', description: 'the same seed gives the same tokens; choice i samples from seed + i' },
  stop: {
    description: 'a string, or up to 4 non-empty strings: the text ends before the first match',
    anyOf: [{ type: 'string' }, { type: 'array', maxItems: 4, items: { type: 'string', minLength: 1 } }],
  },
  n: {
    type: 'integer',
    minimum: 1,
    maximum: MAX_CHOICES,
    default: 1,
    description: 'how many choices, each its own sequence',
  },
  stream: { type: 'boolean', default: false, description: 'answer as Server-Sent Events, ending with data: [DONE]' },
  stream_options: {
    description: 'include_usage adds a last chunk with the usage; chunks carry no obfuscation padding',
    type: 'object',
    properties: {
      include_usage: orNull({ type: 'boolean' }),
      include_obfuscation: orNull({ type: 'boolean', const: false }),
    },
    additionalProperties: NULL,
  },
  logit_bias: {
    description:
      "added to the logits of the named token ids (this model's vocabulary) before sampling: -100 all but bans a " +
      'token, +100 all but forces it',
    type: 'object',
    maxProperties: MAX_LOGIT_BIAS,
    propertyNames: { pattern: '^(0|[1-9][0-9]*)$' },
    additionalProperties: { type: 'number', minimum: -100, maximum: 100 },
  },
  presence_penalty: penalty('subtracted once from each token already generated in this choice'),
  frequency_penalty: penalty('subtracted from each token once per time it was generated in this choice'),
  user: {
    type: 'string',
    description: 'accepted, changes nothing: OpenAI keeps it for abuse monitoring; this server keeps no record of it',
  },
}

const TEXT: JsonSchema = {
  anyOf: [
    { type: 'string' },
    {
      type: 'array',
      items: {
        type: 'object',
        required: ['type', 'text'],
        properties: { type: { const: 'text' }, text: { type: 'string' } },
      },
    },
  ],
}
const TOOL_CALL: JsonSchema = {
  type: 'object',
  required: ['id', 'type', 'function'],
  properties: {
    id: { type: 'string' },
    type: { const: 'function' },
    function: {
      type: 'object',
      required: ['name', 'arguments'],
      properties: {
        name: { type: 'string' },
        arguments: { type: 'string', description: 'JSON text of an object' },
      },
    },
  },
}
const message = (role: JsonSchema, properties: Record<string, JsonSchema>, required: string[]): JsonSchema => ({
  type: 'object',
  required: ['role', ...required],
  properties: { role, ...properties },
  additionalProperties: NULL,
})
const MESSAGE: JsonSchema = {
  anyOf: [
    message({ enum: ['system', 'developer', 'user'] }, { content: TEXT }, ['content']),
    message({ const: 'assistant' }, { content: TEXT, tool_calls: NULL }, ['content']),
    message(
      { const: 'assistant' },
      { content: orNull(TEXT), tool_calls: { type: 'array', minItems: 1, items: TOOL_CALL } },
      ['tool_calls'],
    ),
    message({ const: 'tool' }, { content: TEXT, tool_call_id: { type: 'string' } }, ['content', 'tool_call_id']),
  ],
}
const FORMAT_TYPE = (type: string, properties: Record<string, JsonSchema> = {}, required: string[] = []) => ({
  type: 'object',
  required: ['type', ...required],
  properties: { type: { const: type }, ...properties },
  additionalProperties: NULL,
})

export const CHAT_REQUEST = requestBody(
  'ChatCompletionRequest',
  "POST /v1/chat/completions: messages rendered with the model's chat template",
  {
    ...COMMON,
    messages: {
      description:
        "the conversation, rendered with the model's chat template (developer is taken as system); an assistant's " +
        "earlier tool_calls and a tool result's tool_call_id; any other message field is refused as messages[i].FIELD",
      type: 'array',
      minItems: 1,
      items: MESSAGE,
    },
    logprobs: { type: 'boolean', default: false, description: 'return the log-probability of each token' },
    top_logprobs: {
      type: 'integer',
      minimum: 0,
      maximum: 20,
      description: 'with logprobs: true, that many most likely alternatives at each token',
    },
    safety_identifier: { type: 'string', description: 'accepted, changes nothing: the successor of user' },
    prompt_cache_key: {
      type: 'string',
      description: 'accepted, changes nothing: the output does not depend on a prompt cache',
    },
    store: {
      type: 'boolean',
      const: false,
      description: 'completions are not stored, so only false is honoured',
    },
    response_format: {
      description:
        "text (the default), json_object or json_schema: the answer is decoded under the format's grammar (the schema " +
        'keywords the grammar engine enforces are listed in docs/api.md); only text when tools are offered',
      anyOf: [
        FORMAT_TYPE('text'),
        FORMAT_TYPE('json_object'),
        FORMAT_TYPE(
          'json_schema',
          {
            json_schema: {
              type: 'object',
              required: ['name', 'schema'],
              properties: {
                name: { type: 'string', pattern: NAME },
                description: orNull({ type: 'string' }),
                strict: orNull({ type: 'boolean' }),
                schema: { type: ['object', 'boolean'] },
              },
              additionalProperties: NULL,
            },
          },
          ['json_schema'],
        ),
      ],
    },
    tools: {
      description:
        "function tools with distinct names, rendered through the model's chat template; calls come back as tool_calls",
      type: 'array',
      minItems: 1,
      maxItems: 128,
      items: {
        type: 'object',
        required: ['type', 'function'],
        properties: {
          type: { const: 'function' },
          function: {
            type: 'object',
            required: ['name'],
            properties: {
              name: { type: 'string', pattern: NAME },
              description: orNull({ type: 'string' }),
              parameters: orNull({ type: 'object', description: 'a JSON Schema; omitted: no parameters' }),
              strict: orNull({ type: 'boolean', description: 'honoured only where the call is forced' }),
            },
            additionalProperties: NULL,
          },
        },
        additionalProperties: NULL,
      },
    },
    tool_choice: {
      description:
        'none (tools not offered), auto (the default with tools), required or a named function (both forced by ' +
        'constrained decoding); any but none needs tools, and a named function must be among them',
      anyOf: [
        { enum: ['none', 'auto', 'required'] },
        {
          type: 'object',
          required: ['type', 'function'],
          properties: {
            type: { const: 'function' },
            function: { type: 'object', required: ['name'], properties: { name: { type: 'string' } } },
          },
        },
      ],
    },
    parallel_tool_calls: {
      type: 'boolean',
      default: true,
      description: 'false keeps an answer to at most one call',
    },
    modalities: {
      description: "only ['text']: the answer is text",
      type: 'array',
      minItems: 1,
      maxItems: 1,
      items: { const: 'text' },
    },
  },
  ['messages'],
)

export const COMPLETION_REQUEST = requestBody(
  'CompletionRequest',
  'POST /v1/completions: a raw prompt, no chat template',
  {
    ...COMMON,
    prompt: {
      description: "text, a one-string array, or token ids of this model's vocabulary; one prompt per request",
      anyOf: [
        { type: 'string' },
        { type: 'array', minItems: 1, maxItems: 1, items: { type: 'string' } },
        { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } },
      ],
    },
    logprobs: {
      type: 'integer',
      minimum: 0,
      maximum: 5,
      description: 'return the log-probability of each token with that many most likely alternatives',
    },
    echo: { type: 'boolean', const: false, description: 'the prompt is not echoed back; only false is honoured' },
    best_of: {
      type: 'integer',
      minimum: 1,
      const: 1,
      description: 'completions are not ranked; only 1 is honoured, with n 1 (use n for several)',
    },
    suffix: {
      type: 'string',
      const: '',
      description: 'text is not inserted before a suffix; only an empty one is honoured',
    },
  },
  ['prompt'],
)
