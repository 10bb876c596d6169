/** The one error base of dbcluster: a stable code, a message that says what happened, and a hint for what to do next. */
export class DbcError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message)
    this.name = new.target.name
  }
}

/** Bad command-line input: exit code 2. */
export class UsageError extends DbcError {
  constructor(message: string, hint?: string) {
    super('E_USAGE', message, hint)
  }
}

/** The user stopped a command (Ctrl-C) and it stopped cleanly: exit code 130. */
export class InterruptedError extends DbcError {
  constructor(message: string, hint?: string) {
    super('E_INTERRUPTED', message, hint)
  }
}

/** Exhaustiveness guard for `switch` over discriminated unions. */
export function assertNever(value: never, what = 'value'): never {
  throw new DbcError('E_INTERNAL', `unexpected ${what}: ${JSON.stringify(value)}`)
}

/** Exit codes, one table for the whole CLI. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  interrupted: 130,
} as const
