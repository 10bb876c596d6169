/** Coordinator errors: one class with stable codes, each code tied once to its HTTP status (server) or its retry policy (client). */
import { DbcError } from '../errors.ts'

/** Codes the server answers with, and the status each maps to (docs/coordinator.md §Errors lists them). */
export const HTTP_STATUS = {
  E_MALFORMED: 400,
  E_UNAUTHORIZED: 401,
  E_FORBIDDEN: 403,
  E_NOT_FOUND: 404,
  E_SERIAL_TAKEN: 409,
  E_TOO_LARGE: 413,
  E_INVALID: 422,
  E_INTERNAL: 500,
} as const

export type ServerErrorCode = keyof typeof HTTP_STATUS

/** Codes only the client raises (never sent over the wire). */
export type ClientErrorCode =
  | 'E_COORDINATOR_UNREACHABLE'
  | 'E_COORDINATOR_RESPONSE'
  | 'E_ROSTER_REJECTED'
  | 'E_PEER_NOT_ATTESTED'
  | 'E_PIN_MISMATCH'
  | 'E_REGISTRATION_REJECTED'

/** Codes of local failures: the database and the signing key file. */
export type LocalErrorCode = 'E_DB_TOO_NEW' | 'E_MIGRATION' | 'E_KEY_PERMISSIONS' | 'E_KEY_FILE'

export type CoordinatorErrorCode = ServerErrorCode | ClientErrorCode | LocalErrorCode

export class CoordinatorError extends DbcError {
  constructor(
    override readonly code: CoordinatorErrorCode,
    message: string,
    hint?: string,
    /** For errors decoded from a server reply: the HTTP status it came with. */
    readonly status?: number,
  ) {
    super(code, message, hint)
  }
}

export function httpStatusOf(code: string): number {
  return code in HTTP_STATUS ? HTTP_STATUS[code as ServerErrorCode] : 500
}
