/** Validation of the parameters chat and text completions share, turned into the engine's sampling and stop types. */
import type { ConstraintSpec } from '../engine/constraint.ts'
import { samplingParams, type LogitAdjustments, type SamplingParams } from '../model/sampler.ts'
import { ApiError, invalid } from './errors.ts'
import { unsupported } from './request-fields.ts'
import { MAX_LOGIT_BIAS } from './request-schema.ts'

export interface CommonParams {
  maxTokens: number
  sampling: SamplingParams
  adjustments?: LogitAdjustments
  stop: string[]
  stream: boolean
  includeUsage: boolean
  /** How many choices (OpenAI's `n`). */
  n: number
  /** `response_format` json_object or json_schema: the grammar every choice is decoded under (absent: free text). */
  constraint?: ConstraintSpec
}

/** A number field as checkFields left it: absent, null (the default) or a value its schema accepts. */
const num = (body: Record<string, unknown>, key: string): number | undefined =>
  typeof body[key] === 'number' ? body[key] : undefined

export function checkModel(body: Record<string, unknown>, modelId: string): void {
  if (body.model !== undefined && body.model !== null && body.model !== modelId) {
    throw new ApiError(
      404,
      `The model '${String(body.model)}' does not exist; this server serves '${modelId}'`,
      'invalid_request_error',
      'model_not_found',
      'model',
    )
  }
}

/** `logit_bias`: {"token id": value in [−100, 100]}, ids of this model's vocabulary. */
function parseLogitBias(raw: unknown, vocab: number): Map<number, number> {
  const bias = new Map<number, number>()
  if (raw === undefined || raw === null) return bias
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw invalid(`'logit_bias' must be an object mapping token ids to numbers`, 'logit_bias')
  const entries = Object.entries(raw)
  if (entries.length > MAX_LOGIT_BIAS)
    throw invalid(`'logit_bias' has ${entries.length} token ids, more than ${MAX_LOGIT_BIAS}`, 'logit_bias')
  for (const [key, value] of entries) {
    const id = Number(key)
    if (!/^(0|[1-9]\d*)$/.test(key) || id >= vocab)
      throw invalid(`'logit_bias' key '${key}' is not a token id in 0..${vocab - 1}`, 'logit_bias')
    if (typeof value !== 'number' || !(value >= -100 && value <= 100))
      throw invalid(`'logit_bias' value for token ${key} must be a number in [-100, 100]`, 'logit_bias')
    bias.set(id, value)
  }
  return bias
}

function parseStreamOptions(raw: unknown): boolean {
  if (raw === undefined || raw === null) return false
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw invalid(`'stream_options' must be an object`, 'stream_options')
  for (const [key, value] of Object.entries(raw)) {
    const param = `stream_options.${key}`
    if (value === null) continue
    if (key === 'include_usage' || key === 'include_obfuscation') {
      if (typeof value !== 'boolean') throw invalid(`'${param}' must be a boolean`, param)
      if (key === 'include_obfuscation' && value)
        throw unsupported(param, 'chunks carry no obfuscation padding; only false is honoured')
    } else throw unsupported(param)
  }
  return (raw as { include_usage?: unknown }).include_usage === true
}

/** `response_format`: {type: 'text'} (free text), {type: 'json_object'} (any JSON object) or {type: 'json_schema',
 * json_schema: {name, schema, strict?, description?}} (a value the schema accepts; enforced whether or not `strict`).
 * The schema's keywords are checked when it is compiled (engine/schema-keywords.ts). */
export function parseResponseFormat(raw: unknown): ConstraintSpec | undefined {
  if (raw === undefined || raw === null) return undefined
  const format = raw as Record<string, unknown>
  for (const [key, value] of Object.entries(format))
    if (value !== null && key !== 'type' && !(key === 'json_schema' && format.type === 'json_schema'))
      throw unsupported(`response_format.${key}`)
  if (format.type === 'text') return undefined
  if (format.type === 'json_object') return { kind: 'json_object' }
  if (format.type !== 'json_schema')
    throw unsupported('response_format', `type '${String(format.type)}' is not; text, json_object and json_schema are`)
  const spec = format.json_schema as Record<string, unknown> | undefined
  const param = 'response_format.json_schema'
  if (!spec || typeof spec !== 'object' || Array.isArray(spec))
    throw invalid(`'${param}' must be an object with 'name' and 'schema'`, param)
  for (const [key, value] of Object.entries(spec)) {
    if (value === null) continue
    if (key === 'name') {
      if (typeof value !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(value))
        throw invalid(`'${param}.name' must be 1-64 letters, digits, '_' or '-'`, `${param}.name`)
    } else if (key === 'description') {
      if (typeof value !== 'string') throw invalid(`'${param}.description' must be a string`, `${param}.description`)
    } else if (key === 'strict') {
      if (typeof value !== 'boolean') throw invalid(`'${param}.strict' must be a boolean`, `${param}.strict`)
    } else if (key !== 'schema') throw unsupported(`${param}.${key}`)
  }
  if (typeof spec.name !== 'string') throw invalid(`'${param}.name' is required`, `${param}.name`)
  const schema = spec.schema
  if (typeof schema !== 'boolean' && (!schema || typeof schema !== 'object' || Array.isArray(schema)))
    throw invalid(`'${param}.schema' must be a JSON Schema object`, `${param}.schema`)
  return { kind: 'json_schema', schema: schema as Record<string, unknown> | boolean }
}

/** The shared parameters of a body that checkFields (request-fields.ts) has checked against its endpoint's schema. */
export function parseCommon(
  body: Record<string, unknown>,
  defaults: { maxTokens: number; vocab: number },
): CommonParams {
  const n = num(body, 'n') ?? 1
  const maxTokens = num(body, 'max_completion_tokens') ?? num(body, 'max_tokens') ?? defaults.maxTokens
  let stop: string[] = []
  if (typeof body.stop === 'string') stop = [body.stop]
  else if (Array.isArray(body.stop)) {
    if (body.stop.length > 4 || !body.stop.every((s) => typeof s === 'string' && s.length > 0))
      throw invalid(`'stop' must be up to 4 non-empty strings`, 'stop')
    stop = body.stop as string[]
  } else if (body.stop !== undefined && body.stop !== null)
    throw invalid(`'stop' must be a string or an array of strings`, 'stop')
  const includeUsage = parseStreamOptions(body.stream_options)
  const logitBias = parseLogitBias(body.logit_bias, defaults.vocab)
  const presencePenalty = num(body, 'presence_penalty') ?? 0
  const frequencyPenalty = num(body, 'frequency_penalty') ?? 0
  const adjustments =
    logitBias.size || presencePenalty || frequencyPenalty ? { logitBias, presencePenalty, frequencyPenalty } : undefined
  let sampling: SamplingParams
  try {
    sampling = samplingParams({
      temperature: num(body, 'temperature') ?? 1,
      topP: num(body, 'top_p') ?? 1,
      topK: num(body, 'top_k') ?? 0,
      minP: num(body, 'min_p') ?? 0,
      repetitionPenalty: num(body, 'repetition_penalty') ?? 1,
      seed: num(body, 'seed'),
    })
  } catch (error) {
    if (error instanceof ApiError) throw error
    throw invalid((error as Error).message)
  }
  const constraint = parseResponseFormat(body.response_format)
  return {
    maxTokens,
    sampling,
    ...(adjustments ? { adjustments } : {}),
    ...(constraint ? { constraint } : {}),
    stop,
    stream: body.stream === true,
    includeUsage,
    n,
  }
}
