/** `dbcluster cluster status`: a running head's members — layer ranges, memory, the plan's numbers, control-link health
 * and each node's live health from its last pong — once, as JSON, or refreshed in place with --watch. */
import { defineCommand } from 'citty'
import type { MemberStatus } from '../cluster/cluster-planner.ts'
import type { ClusterTrust } from '../cluster/cluster-roster.ts'
import { UsageError } from '../errors.ts'

type Health = Record<string, unknown>

/** Why the head could not be read: unreachable (worth retrying under --watch) or refused for want of a key (not). */
class HeadUnreadable extends UsageError {}

async function readHealth(url: string, key: string | undefined): Promise<Health> {
  let res: Response
  let health: Health
  try {
    res = await fetch(`${url}/health`, { headers: key ? { authorization: `Bearer ${key}` } : {} })
    health = (await res.json()) as Health
  } catch (error) {
    throw new HeadUnreadable(`cannot reach ${url}: ${(error as Error).message}`, 'is `dbcluster serve` running there?')
  }
  if (res.status === 401)
    throw new UsageError(`${url} needs its API key for /health`, 'pass --api-key KEY (or set DBCLUSTER_API_KEY)')
  return health
}

const gib = (b: number | null | undefined) => (b == null ? '?' : `${(b / 1024 ** 3).toFixed(2)} GiB`)
const ago = (ms: number | null | undefined) =>
  ms == null ? '-' : ms < 1000 ? `${ms} ms ago` : `${(ms / 1000).toFixed(1)} s ago`

/** The lines `cluster status` prints for one reading of /health. */
export function renderStatus(health: Health): string[] {
  const lines = [
    `status ${health.status}${health.reason ? ` (${health.reason})` : ''}; ${health.nodes ?? 1} node(s); ${health.backend} backend on the head`,
  ]
  const stopping = health.stopping as { now: boolean; drain_timeout_s: number } | null | undefined
  if (stopping)
    lines.push(`stopping (dbcluster cluster stop${stopping.now ? ' --now' : `, drain ${stopping.drain_timeout_s} s`})`)
  const trust = health.cluster_trust as ClusterTrust | null | undefined
  if (trust)
    lines.push(
      `trust ${trust.trust_level}, the weakest member's (coordinator roster ${trust.cluster_id}: ${trust.members.map((m) => `${m.serial} ${m.trust_level}`).join(', ')})`,
    )
  else if (health.members) lines.push('trust: no coordinator vouches for this cluster (pinned keys only)')
  const members = health.members as MemberStatus[] | undefined
  if (!members) return [...lines, `one node: layers [${(health.head_layers as number[]).join(', ')})`]
  lines.push(
    '| rank | node | layers | usable | weights | KV | headroom | link | last heard | ping | free now | pressure | model | reported |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  )
  for (const m of members) {
    const link = m.link === null ? 'head' : m.link.up ? 'up' : 'DOWN'
    const ping = m.link?.rtt_ms == null ? '-' : `${m.link.rtt_ms} ms`
    const model = m.model_loaded == null ? '?' : m.model_loaded ? 'loaded' : 'not loaded'
    const reported = m.health_ms_ago === 0 ? 'now' : ago(m.health_ms_ago)
    lines.push(
      `| ${m.rank} | ${m.serial ?? '?'} | ${m.layers ? `[${m.layers[0]}, ${m.layers[1]})` : '?'} | ${gib(m.usable_bytes)} | ${gib(m.weight_bytes)} | ${gib(m.kv_bytes)} | ${gib(m.headroom_bytes)} | ${link} | ${ago(m.link?.last_heard_ms_ago)} | ${ping} | ${gib(m.free_bytes)} | ${m.memory_pressure ?? '?'} | ${model} | ${reported} |`,
    )
  }
  return lines
}

export default defineCommand({
  meta: { name: 'status', description: 'Members, layer ranges, memory and live health of a running head' },
  args: {
    url: { type: 'string', description: 'The head’s API URL', default: 'http://127.0.0.1:8080' },
    json: {
      type: 'boolean',
      description: 'Print the head’s /health JSON (members, ranks, layer ranges, memory, link and node health)',
      default: false,
    },
    'api-key': { type: 'string', description: 'The head’s --api-key, when it has one (or set DBCLUSTER_API_KEY)' },
    watch: {
      type: 'boolean',
      description:
        'Refresh until interrupted: redrawn in place on a terminal, one block per refresh otherwise; an unreachable head is reported and retried',
      default: false,
    },
    interval: { type: 'string', description: 'With --watch: seconds between refreshes', default: '2', valueHint: 'S' },
  },
  async run({ args }) {
    const key = args['api-key'] ?? process.env.DBCLUSTER_API_KEY
    if (!args.watch) {
      const health = await readHealth(args.url, key)
      if (args.json) return console.log(JSON.stringify(health))
      for (const line of renderStatus(health)) console.log(line)
      return
    }
    if (args.json)
      throw new UsageError('--json prints one object and --watch refreshes: give one of them', 'drop --json or --watch')
    const seconds = Number(args.interval)
    if (!Number.isFinite(seconds) || seconds < 0.1)
      throw new UsageError(`--interval must be a number of seconds >= 0.1, got '${args.interval}'`)
    await watch(args.url, key, seconds * 1000, Boolean(process.stdout.isTTY))
  },
})

/** Redraws until SIGINT / SIGTERM: on a terminal the screen is cleared first; elsewhere each block follows the last. */
async function watch(url: string, key: string | undefined, intervalMs: number, tty: boolean): Promise<void> {
  let stop = false
  let wake = () => {}
  const end = () => ((stop = true), wake())
  process.once('SIGINT', end)
  process.once('SIGTERM', end)
  try {
    while (!stop) {
      let lines: string[]
      try {
        lines = renderStatus(await readHealth(url, key))
      } catch (error) {
        if (!(error instanceof HeadUnreadable)) throw error
        lines = [`${error.message} (trying again every ${intervalMs / 1000} s)`]
      }
      const title = `${url} at ${new Date().toLocaleTimeString()} (every ${intervalMs / 1000} s; Ctrl-C ends)`
      process.stdout.write(`${tty ? '\x1b[H\x1b[2J' : ''}${[title, ...lines].join('\n')}\n${tty ? '' : '\n'}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, intervalMs)
        wake = () => (clearTimeout(timer), resolve())
      })
    }
  } finally {
    process.off('SIGINT', end)
    process.off('SIGTERM', end)
  }
}
