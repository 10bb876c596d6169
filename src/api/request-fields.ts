/** Checks a request body against its endpoint's schema (request-schema.ts; docs/api.md §Request fields). Any field the
 * schema does not name is refused by name with 400 `unsupported_parameter`, never accepted and ignored. A field of one
 * scalar type is checked here from its schema alone (type and bounds: `invalid_value`; a `const` other than the one
 * value honoured, such as `store: true`: `unsupported_parameter`, quoting the field's description); the other fields are
 * checked by their parsers (request-params.ts, chat-completions.ts, tool-calls/tool-request.ts). A null value asks for
 * the field's default, as if it were absent. */
import { ApiError, invalid } from './errors.ts'
import { isScalar, type JsonSchema, type RequestBody } from './request-schema.ts'

export const unsupported = (param: string, detail?: string) =>
  new ApiError(
    400,
    `'${param}' is not supported by this server${detail ? `: ${detail}` : ''} (docs/api.md lists the fields it honours)`,
    'invalid_request_error',
    'unsupported_parameter',
    param,
  )

const bound = (schema: JsonSchema, key: string) => (typeof schema[key] === 'number' ? (schema[key] as number) : null)

/** What a number field must be, in words: "an integer in [1, 8]", "a number in (0, 1]", "an integer >= 1". */
function numberText(schema: JsonSchema): string {
  const what = schema.type === 'integer' ? 'an integer' : 'a number'
  const low = bound(schema, 'minimum') ?? bound(schema, 'exclusiveMinimum')
  const high = bound(schema, 'maximum') ?? bound(schema, 'exclusiveMaximum')
  const open = bound(schema, 'exclusiveMinimum') !== null ? '(' : '['
  const close = bound(schema, 'exclusiveMaximum') !== null ? ')' : ']'
  if (low !== null && high !== null) return `${what} in ${open}${low}, ${high}${close}`
  if (low !== null) return `${what} ${open === '(' ? '>' : '>='} ${low}`
  if (high !== null) return `${what} ${close === ')' ? '<' : '<='} ${high}`
  return what
}

/** The error of a scalar field's value against its schema, or null when the value is honoured. */
export function scalarError(key: string, value: unknown, schema: JsonSchema): ApiError | null {
  switch (schema.type) {
    case 'string':
      if (typeof value !== 'string') return invalid(`'${key}' must be a string`, key)
      break
    case 'boolean':
      if (typeof value !== 'boolean') return invalid(`'${key}' must be a boolean`, key)
      break
    default: {
      const n = value as number
      const fits =
        typeof value === 'number' &&
        Number.isFinite(n) &&
        (schema.type !== 'integer' || Number.isInteger(n)) &&
        !(n < (bound(schema, 'minimum') ?? -Infinity)) &&
        !(n > (bound(schema, 'maximum') ?? Infinity)) &&
        !(n <= (bound(schema, 'exclusiveMinimum') ?? -Infinity)) &&
        !(n >= (bound(schema, 'exclusiveMaximum') ?? Infinity))
      if (!fits) return invalid(`'${key}' must be ${numberText(schema)}`, key)
    }
  }
  if ('const' in schema && value !== schema.const) return unsupported(key, schema.description as string)
  return null
}

/** The forms of non-scalar fields that are refused before their parsers run, and rules between fields. */
const CONDITIONS: Record<string, (value: unknown, body: Record<string, unknown>) => ApiError | null> = {
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
  best_of: (_, body) =>
    body.n === undefined || body.n === null || body.n === 1
      ? null
      : invalid(`'best_of' must be at least 'n'`, 'best_of'),
}

/** Refuses every field the endpoint does not honour, and honoured fields in a form it cannot honour, naming the first. */
export function checkFields(body: Record<string, unknown>, request: RequestBody): void {
  for (const [key, value] of Object.entries(body)) {
    if (value === null) continue
    const schema = request.fields[key]
    if (!schema) throw unsupported(key)
    const error = (isScalar(schema) ? scalarError(key, value, schema) : null) ?? CONDITIONS[key]?.(value, body) ?? null
    if (error) throw error
  }
}
