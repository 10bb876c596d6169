/** `dbcluster cluster`: run a local N-node cluster, and read a running head's cluster status. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { UsageError } from '../errors.ts'
import type { ClusterTrust } from '../cluster/cluster-roster.ts'
import type { MemberStatus } from '../cluster/cluster-planner.ts'
import { startLocalCluster } from '../cluster/local-cluster.ts'
import { peersList, rememberedPeersFile, rememberPeer } from '../cluster/remembered-peers.ts'
import { ipv4ToNumber } from '../discovery/link-local.ts'
import { localAddressToward } from '../discovery/local-address.ts'
import { selfCommand } from '../self-command.ts'
import { fingerprint } from '../trust/identity.ts'
import { loadLocalIdentity } from '../trust/local-identity.ts'
import { machineSerial } from '../trust/machine-info.ts'
import { parseHostPort, PEER_HANDSHAKE_ARGS, pinPeer } from './pin-peer.ts'

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
    const trust = health.cluster_trust as ClusterTrust | null | undefined
    if (trust)
      consola.info(
        `trust ${trust.trust_level}, the weakest member's (coordinator roster ${trust.cluster_id}: ${trust.members.map((m) => `${m.serial} ${m.trust_level}`).join(', ')})`,
      )
    else if (health.members) consola.info('trust: no coordinator vouches for this cluster (pinned keys only)')
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

const DEFAULT_LINK_PORT = '47391'

const ipv4 = (value: string, flag: string): string => {
  try {
    ipv4ToNumber(value)
    return value
  } catch {
    throw new UsageError(`${flag} must be an IPv4 address, got '${value}'`)
  }
}

const setup = defineCommand({
  meta: {
    name: 'setup',
    description:
      'Two seeds in one step: pin the peer (as trust pin) and remember its link address, so that serve --peers (no list) or plain serve joins it',
  },
  args: {
    'peer-serial': {
      type: 'string',
      description: "The peer's serial (its --node-name, or its machine serial)",
      required: true,
      valueHint: 'SERIAL',
    },
    'peer-ip': {
      type: 'string',
      description: "The peer's IPv4 address on the link (e.g. its Thunderbolt bridge address)",
      required: true,
      valueHint: 'IP',
    },
    'peer-port': { type: 'string', description: "The peer's link port", default: DEFAULT_LINK_PORT },
    key: {
      type: 'string',
      description: "The peer's public key, base64 ('dbcluster identity show' on the peer prints it)",
      valueHint: 'BASE64',
    },
    'from-peer': {
      type: 'boolean',
      description: "Read the key from the peer's link port instead (it must be serving and already trust this machine)",
    },
    'self-ip': {
      type: 'string',
      description: "This node's IPv4 address on the link (default: the address this machine reaches --peer-ip from)",
      valueHint: 'IP',
    },
    'link-port': { type: 'string', description: "This node's link port", default: DEFAULT_LINK_PORT },
    'node-name': {
      type: 'string',
      description: 'This node’s serial, as serve --node-name (default: the machine serial)',
    },
    ...PEER_HANDSHAKE_ARGS,
    yes: { type: 'boolean', description: 'Pin without asking (needed without a terminal)', default: false },
    replace: {
      type: 'boolean',
      description: 'Allow replacing a different key already pinned for the peer',
      default: false,
    },
  },
  async run({ args }) {
    const peerIp = ipv4(args['peer-ip'], '--peer-ip')
    const peerPort = parseHostPort(`${peerIp}:${args['peer-port']}`, '--peer-port').port
    const linkPort = parseHostPort(`127.0.0.1:${args['link-port']}`, '--link-port').port
    const selfIp = args['self-ip'] !== undefined ? ipv4(args['self-ip'], '--self-ip') : await localAddressToward(peerIp)
    const serial = args['node-name'] ?? machineSerial()
    if (args['peer-serial'] === serial)
      throw new UsageError(`--peer-serial '${serial}' is this node's own serial`, 'give the other machine’s serial')
    const pinned = await pinPeer({
      serial: args['peer-serial'],
      key: args.key,
      fromPeer: args['from-peer'] ? { host: peerIp, port: peerPort } : undefined,
      replace: args.replace === true,
      yes: args.yes === true,
      clusterId: args['cluster-id'],
      cipher: args.cipher,
      nodeName: serial,
      flags: { serial: '--peer-serial', key: '--key', fromPeer: '--from-peer' },
    })
    const path = rememberedPeersFile()
    const cluster = rememberPeer(
      path,
      { serial, host: selfIp, port: linkPort },
      { serial: pinned.serial, host: peerIp, port: peerPort },
    )
    consola.success(
      `remembered in ${path}: ${cluster.nodes.map((n, r) => `rank ${r} ${n.serial} ${n.host}:${n.port}`).join(', ')}`,
    )
    const { identity } = loadLocalIdentity()
    const me = Buffer.from(identity.publicKey).toString('base64')
    console.log(`start this node:  dbcluster serve --peers   (= --peers ${peersList(cluster)} --rank ${cluster.rank})`)
    console.log(
      `on ${pinned.serial}, if not done: dbcluster cluster setup --peer-serial ${serial} --peer-ip ${selfIp} --peer-port ${linkPort} --key ${me}`,
    )
    console.log(`and compare there this machine's fingerprint ${fingerprint(identity.publicKey)}`)
  },
})

export default defineCommand({
  meta: { name: 'cluster', description: 'Pipeline clusters: set one up, run one locally, show a running one' },
  subCommands: { setup, local, status, devices: () => import('./cluster-devices.ts').then((m) => m.default) },
})
