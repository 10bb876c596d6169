/** `dbcluster cluster`: run a local N-node cluster, and read a running head's cluster status. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { UsageError } from '../errors.ts'
import type { MemberStatus } from '../cluster/cluster-planner.ts'
import { startLocalCluster } from '../cluster/local-cluster.ts'
import { selfCommand } from '../self-command.ts'

const local = defineCommand({
  meta: {
    name: 'local',
    description:
      'Start N nodes of one pipeline cluster on this machine over loopback; the head serves the API on --port',
  },
  args: {
    nodes: { type: 'string', description: 'Number of nodes (each its own process)', default: '2' },
    model: { type: 'string', description: 'Model folder', required: true, valueHint: 'DIR' },
    port: { type: 'string', description: 'API port of the head', default: '8080' },
    split: { type: 'string', description: 'Layers per node, e.g. 18,10', valueHint: 'N,N' },
    threads: { type: 'string', description: 'CPU threads per node', default: '1' },
  },
  async run({ args }) {
    const nodes = Number(args.nodes)
    if (!Number.isInteger(nodes) || nodes < 2) throw new UsageError('--nodes must be 2 or more')
    const extra = ['--backend', 'cpu', '--threads', args.threads, ...(args.split ? ['--split', args.split] : [])]
    consola.start(`starting ${nodes} nodes`)
    const cluster = await startLocalCluster({
      nodes,
      model: args.model,
      apiPort: Number(args.port),
      self: selfCommand(),
      extraArgs: extra,
      onLine: (r, l) => consola.log(`[node ${r}] ${l}`),
    })
    consola.success(`cluster of ${nodes} nodes serving on ${cluster.url}/v1 (link ports ${cluster.ports.join(', ')})`)
    console.log(`listening on ${cluster.url}`)
    await new Promise<void>((done) => {
      process.once('SIGINT', () => done())
      process.once('SIGTERM', () => done())
    })
    await cluster.stop()
  },
})

const status = defineCommand({
  meta: { name: 'status', description: 'Members, layer ranges and link health of a running head' },
  args: {
    url: { type: 'string', description: 'The head’s API URL', default: 'http://127.0.0.1:8080' },
    json: {
      type: 'boolean',
      description: 'Print the head’s /health JSON (members, ranks, layer ranges, memory, link health)',
      default: false,
    },
    'api-key': { type: 'string', description: 'The head’s --api-key, when it has one (or set DBCLUSTER_API_KEY)' },
  },
  async run({ args }) {
    let health: Record<string, unknown>
    const key = args['api-key'] ?? process.env.DBCLUSTER_API_KEY
    let res: Response
    try {
      res = await fetch(`${args.url}/health`, { headers: key ? { authorization: `Bearer ${key}` } : {} })
      health = (await res.json()) as Record<string, unknown>
    } catch (error) {
      throw new UsageError(
        `cannot reach ${args.url}: ${(error as Error).message}`,
        'is `dbcluster serve` running there?',
      )
    }
    if (res.status === 401)
      throw new UsageError(`${args.url} needs its API key for /health`, 'pass --api-key KEY (or set DBCLUSTER_API_KEY)')
    if (args.json) return console.log(JSON.stringify(health))
    consola.info(
      `status ${health.status}${health.reason ? ` (${health.reason})` : ''}; ${health.nodes} node(s); ${health.backend} backend on the head`,
    )
    const members = health.members as MemberStatus[] | undefined
    if (!members) return console.log(`one node: layers [${(health.head_layers as number[]).join(', ')})`)
    const gib = (b: number | null) => (b === null ? '?' : `${(b / 1024 ** 3).toFixed(2)} GiB`)
    console.log('| rank | node | layers | usable | weights | KV | headroom | link | last heard | ping |')
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for (const m of members) {
      const link = m.link === null ? 'head' : m.link.up ? 'up' : 'DOWN'
      const heard = m.link?.last_heard_ms_ago == null ? '-' : `${m.link.last_heard_ms_ago} ms ago`
      const ping = m.link?.rtt_ms == null ? '-' : `${m.link.rtt_ms} ms`
      console.log(
        `| ${m.rank} | ${m.serial ?? '?'} | ${m.layers ? `[${m.layers[0]}, ${m.layers[1]})` : '?'} | ${gib(m.usable_bytes)} | ${gib(m.weight_bytes)} | ${gib(m.kv_bytes)} | ${gib(m.headroom_bytes)} | ${link} | ${heard} | ${ping} |`,
      )
    }
  },
})

export default defineCommand({
  meta: { name: 'cluster', description: 'Pipeline clusters: run one locally, show a running one' },
  subCommands: { local, status },
})
