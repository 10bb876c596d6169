/** OpenAI-style errors: `{error: {message, type, code}}` with the right status; every error maps here, once. */
import type { Context } from 'hono'
import { DbcError } from '../errors.ts'

export class ApiError extends Error {
  constructor(
    readonly status: 400 | 401 | 404 | 413 | 429 | 500 | 503 | 504,
    message: string,
    readonly type: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message)
  }
}

export const invalid = (message: string, param: string | null = null) =>
  new ApiError(400, message, 'invalid_request_error', 'invalid_value', param)

/** Maps any thrown value to an ApiError (domain errors by their stable codes). */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error
  if (error instanceof DbcError) {
    const message = error.hint ? `${error.message} (${error.hint})` : error.message
    switch (error.code) {
      case 'E_QUEUE_FULL':
        return new ApiError(429, message, 'rate_limit_error', 'queue_full')
      case 'E_DEGRADED':
        return new ApiError(503, message, 'service_unavailable', 'cluster_degraded')
      case 'E_CLOSED':
        return new ApiError(503, message, 'service_unavailable', 'shutting_down')
      case 'E_CONTEXT':
      case 'E_PROMPT':
        return new ApiError(400, message, 'invalid_request_error', 'context_length_exceeded')
      case 'E_TIMEOUT':
        return new ApiError(504, message, 'timeout', 'request_timeout')
      default:
        return new ApiError(500, message, 'server_error', error.code)
    }
  }
  return new ApiError(500, error instanceof Error ? error.message : String(error), 'server_error')
}

export function errorBody(e: ApiError) {
  return { error: { message: e.message, type: e.type, code: e.code, param: e.param } }
}

export function errorResponse(c: Context, error: unknown): Response {
  const e = toApiError(error)
  const headers: Record<string, string> = {}
  if (e.status === 503) headers['Retry-After'] = '5'
  if (e.status === 429) headers['Retry-After'] = '1'
  return c.json(errorBody(e), e.status, headers)
}
