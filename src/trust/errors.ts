/** Trust errors: identity keys, pins and the handshake, each with a stable code (docs/protocol.md lists them). */
import { DbcError } from '../errors.ts'

export class TrustError extends DbcError {}
