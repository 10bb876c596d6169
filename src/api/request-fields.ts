/** The request fields each endpoint honours (docs/api.md §Request fields). Any other field is refused by name with 400
 * `unsupported_parameter`, never accepted and ignored. A few OpenAI fields are honoured only in the form that changes
 * nothing here (`store: false`); `response_format` is honoured as text, `json_object` or
 * `json_schema` (request-params.ts turns it into a grammar constraint); a null value asks for the
 * field's default, as if it were absent. */
import { ApiError, invalid } from './errors.ts'

export const unsupported = (param: string, detail?: string) =>
  new ApiError(
    400,
    `'${param}' is not supported by this server${detail ? `: ${detail}` : ''} (docs/api.md lists the fields it honours)`,
    'invalid_request_error',
    'unsupported_parameter',
    param,
  )

/** Both endpoints: sampling, stopping, streaming, choices, log-probabilities, and `user` (an end-user id OpenAI keeps
 * for abuse monitoring: nothing here changes with it). */
const COMMON = [
  'model',
  'max_tokens',
  'max_completion_tokens',
  'temperature',
  'top_p',
  'top_k',
  'min_p',
  'repetition_penalty',
  'seed',
  'stop',
  'n',
  'stream',
  'stream_options',
  'logprobs',
  'logit_bias',
  'presence_penalty',
  'frequency_penalty',
  'user',
]

export const CHAT_FIELDS: ReadonlySet<string> = new Set([
  ...COMMON,
  'messages',
  'top_logprobs',
  'safety_identifier',
  'prompt_cache_key',
  'store',
  'response_format',
  // tools, tool_choice and parallel_tool_calls are checked in tool-calls/tool-request.ts
  'tools',
  'tool_choice',
  'parallel_tool_calls',
  'modalities',
])

export const COMPLETION_FIELDS: ReadonlySet<string> = new Set([...COMMON, 'prompt', 'echo', 'best_of', 'suffix'])

const text = (key: string) => (v: unknown) => (typeof v === 'string' ? null : invalid(`'${key}' must be a string`, key))

/** Checks of fields honoured only in some forms: null when the value is honoured, else the error naming the field. */
const CONDITIONS: Record<string, (value: unknown, body: Record<string, unknown>) => ApiError | null> = {
  user: text('user'),
  safety_identifier: text('safety_identifier'),
  prompt_cache_key: text('prompt_cache_key'),
  store: (v) =>
    typeof v !== 'boolean'
      ? invalid(`'store' must be a boolean`, 'store')
      : v
        ? unsupported('store', 'completions are not stored, so only false is honoured')
        : null,
  response_format: (v) => {
    const type = (v as { type?: unknown } | null)?.type
    if (!v || typeof v !== 'object' || typeof type !== 'string')
      return invalid(`'response_format' must be an object with a 'type'`, 'response_format')
    return type === 'text' || type === 'json_object' || type === 'json_schema'
      ? null
      : unsupported('response_format', `type '${type}' is not; text, json_object and json_schema are`)
  },
  modalities: (v) =>
    Array.isArray(v) && v.length === 1 && v[0] === 'text'
      ? null
      : unsupported('modalities', `only ['text'] is honoured: the answer is text`),
  echo: (v) =>
    typeof v !== 'boolean'
      ? invalid(`'echo' must be a boolean`, 'echo')
      : v
        ? unsupported('echo', 'the prompt is not echoed back; only false is honoured')
        : null,
  best_of: (v, body) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
      return invalid(`'best_of' must be a positive integer`, 'best_of')
    if (v !== 1) return unsupported('best_of', 'completions are not ranked; only 1 is honoured (use n for several)')
    return body.n === undefined || body.n === null || body.n === 1
      ? null
      : invalid(`'best_of' must be at least 'n'`, 'best_of')
  },
  suffix: (v) =>
    v === '' ? null : unsupported('suffix', 'text is not inserted before a suffix; only an empty one is honoured'),
}

/** Refuses every field the endpoint does not honour, and honoured fields in a form it cannot honour, naming the first. */
export function refuseUnsupported(body: Record<string, unknown>, fields: ReadonlySet<string>): void {
  for (const [key, value] of Object.entries(body)) {
    if (value === null) continue
    if (!fields.has(key)) throw unsupported(key)
    const error = CONDITIONS[key]?.(value, body)
    if (error) throw error
  }
}
