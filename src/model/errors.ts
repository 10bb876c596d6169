/** Checkpoint and model errors: each says what is wrong with which file or tensor, and what to do. */
import { DbcError } from '../errors.ts'

export class CheckpointError extends DbcError {}
