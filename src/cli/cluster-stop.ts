/** `dbcluster cluster stop`: asks a running head to stop its cluster (POST /admin/stop, docs/cluster.md §Stopping) and
 * waits until the head has gone — it stops its stages first. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { DEFAULT_DRAIN_S } from '../api/admin-stop.ts'
import { DbcError, UsageError } from '../errors.ts'

/** Past the drain, how long the head may take to stop its stages and itself before this command gives up waiting. */
const STOP_MARGIN_S = 30

export default defineCommand({
  meta: {
    name: 'stop',
    description:
      'Stop a running cluster: the head refuses new requests, lets running ones finish (at most --drain-timeout), stops every stage, then itself',
  },
  args: {
    url: { type: 'string', description: 'The head’s API URL', default: 'http://127.0.0.1:8080' },
    now: {
      type: 'boolean',
      description: 'Do not drain: running requests end at once with an E_CLUSTER_STOPPED error',
      default: false,
    },
    'drain-timeout': {
      type: 'string',
      description: 'Seconds running requests get to finish before they are ended',
      default: String(DEFAULT_DRAIN_S),
      valueHint: 'S',
    },
    'api-key': { type: 'string', description: 'The head’s --api-key, when it has one (or set DBCLUSTER_API_KEY)' },
  },
  async run({ args }) {
    const drainS = Number(args['drain-timeout'])
    if (!Number.isFinite(drainS) || drainS < 0)
      throw new UsageError(`--drain-timeout must be a number of seconds >= 0, got '${args['drain-timeout']}'`)
    const key = args['api-key'] ?? process.env.DBCLUSTER_API_KEY
    let res: Response
    try {
      res = await fetch(`${args.url}/admin/stop`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
        body: JSON.stringify({ now: args.now === true, drain_timeout_s: drainS }),
      })
    } catch (error) {
      throw new DbcError(
        'E_UNREACHABLE',
        `cannot reach ${args.url}: ${(error as Error).message}`,
        'is the head running there? (nothing to stop if not)',
      )
    }
    if (res.status === 401)
      throw new UsageError(`${args.url} needs its API key`, 'pass --api-key KEY (or set DBCLUSTER_API_KEY)')
    if (res.status === 404)
      throw new DbcError('E_NO_STOP', `${args.url} has no /admin/stop`, 'is it a dbcluster head of this release?')
    const answer = (await res.json().catch(() => ({}))) as {
      started?: boolean
      now?: boolean
      drain_timeout_s?: number
      running?: number
      error?: { message: string }
    }
    if (res.status !== 202)
      throw new DbcError('E_STOP_REFUSED', `${args.url} refused the stop (${res.status}): ${answer.error?.message}`)
    const running = answer.running ?? 0
    const drain = answer.drain_timeout_s ?? drainS
    if (!answer.started) consola.info(`${args.url} was stopping already${args.now ? '; its drain is cut now' : ''}`)
    else if (answer.now) consola.start(`stopping ${args.url} now: ${running} running request(s) end with an error`)
    else consola.start(`stopping ${args.url}: ${running} running request(s) get up to ${drain} s to finish`)
    const waitS = (answer.now ? 0 : drain) + STOP_MARGIN_S
    if (!(await gone(args.url, waitS * 1000)))
      throw new DbcError(
        'E_STOP_TIMEOUT',
        `${args.url} still answers ${waitS} s after the stop`,
        'look at the head’s output; `dbcluster cluster stop --now` cuts a drain, SIGTERM ends the head',
      )
    consola.success(`the cluster at ${args.url} has stopped (the head stopped its stages, then itself)`)
  },
})

/** True once nothing answers at `url` any more, false if it still does after `ms`. */
async function gone(url: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    // a refused connection means gone; a slow answer (a busy head) means still there
    const answered = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) })
      .then(() => true)
      .catch((error: Error) => error.name === 'TimeoutError')
    if (!answered) return true
    await Bun.sleep(250)
  }
  return false
}
