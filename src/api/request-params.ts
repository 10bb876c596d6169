/** Validation of the parameters chat and text completions share, turned into the engine's sampling and stop types. */
import { samplingParams, type SamplingParams } from '../model/sampler.ts'
import { ApiError, invalid } from './errors.ts'

export interface CommonParams {
  maxTokens: number
  sampling: SamplingParams
  stop: string[]
  stream: boolean
  includeUsage: boolean
}

const num = (
  body: Record<string, unknown>,
  key: string,
  check: (v: number) => boolean,
  what: string,
): number | undefined => {
  const v = body[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !check(v)) throw invalid(`'${key}' must be ${what}`, key)
  return v
}

export function checkModel(body: Record<string, unknown>, modelId: string): void {
  if (body.model !== undefined && body.model !== modelId) {
    throw new ApiError(
      404,
      `The model '${String(body.model)}' does not exist; this server serves '${modelId}'`,
      'invalid_request_error',
      'model_not_found',
      'model',
    )
  }
}

export function parseCommon(body: Record<string, unknown>, defaults: { maxTokens: number }): CommonParams {
  const n = num(body, 'n', (v) => Number.isInteger(v), 'an integer')
  if (n !== undefined && n !== 1) throw invalid(`'n' must be 1: this server returns one choice per request`, 'n')
  const maxTokens =
    num(body, 'max_completion_tokens', (v) => Number.isInteger(v) && v >= 1, 'a positive integer') ??
    num(body, 'max_tokens', (v) => Number.isInteger(v) && v >= 1, 'a positive integer') ??
    defaults.maxTokens
  let stop: string[] = []
  if (typeof body.stop === 'string') stop = [body.stop]
  else if (Array.isArray(body.stop)) {
    if (body.stop.length > 4 || !body.stop.every((s) => typeof s === 'string' && s.length > 0))
      throw invalid(`'stop' must be up to 4 non-empty strings`, 'stop')
    stop = body.stop as string[]
  } else if (body.stop !== undefined && body.stop !== null)
    throw invalid(`'stop' must be a string or an array of strings`, 'stop')
  if (body.stream !== undefined && typeof body.stream !== 'boolean')
    throw invalid(`'stream' must be a boolean`, 'stream')
  const streamOptions = body.stream_options as { include_usage?: unknown } | undefined | null
  let sampling: SamplingParams
  try {
    sampling = samplingParams({
      temperature: num(body, 'temperature', (v) => v >= 0 && v <= 2, 'between 0 and 2') ?? 1,
      topP: num(body, 'top_p', (v) => v > 0 && v <= 1, 'in (0, 1]') ?? 1,
      topK: num(body, 'top_k', (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer') ?? 0,
      minP: num(body, 'min_p', (v) => v >= 0 && v < 1, 'in [0, 1)') ?? 0,
      repetitionPenalty: num(body, 'repetition_penalty', (v) => v > 0, 'positive') ?? 1,
      seed: num(body, 'seed', (v) => Number.isInteger(v), 'an integer'),
    })
  } catch (error) {
    if (error instanceof ApiError) throw error
    throw invalid((error as Error).message)
  }
  return {
    maxTokens,
    sampling,
    stop,
    stream: body.stream === true,
    includeUsage: streamOptions?.include_usage === true,
  }
}
