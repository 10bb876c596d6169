/** Link errors: stable codes, what happened, what to do. Any of them closes the link (fail closed). */
import { DbcError } from '../errors.ts'

export class LinkError extends DbcError {}
