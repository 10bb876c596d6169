/** Model distribution errors (hub pull, manifests, shard transfer): each names the file and says what to do next. */
import { DbcError } from '../errors.ts'

export class DistributionError extends DbcError {}
