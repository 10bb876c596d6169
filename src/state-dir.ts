/** Where dbcluster keeps its state (keys, pins, models): DBCLUSTER_HOME, or ~/.dbcluster. */
import { homedir } from 'node:os'
import { join } from 'node:path'

export function stateDir(): string {
  return process.env.DBCLUSTER_HOME ?? join(homedir(), '.dbcluster')
}
