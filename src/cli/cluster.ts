/** `dbcluster cluster`: set one up, run a local N-node cluster, read a running head's status, and stop a cluster. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { DbcError, UsageError } from '../errors.ts'
import { startLocalCluster } from '../cluster/local-cluster.ts'
import { loadRememberedPeers, peersList, rememberedPeersFile, rememberPeer } from '../cluster/remembered-peers.ts'
import { ipv4ToNumber } from '../discovery/link-local.ts'
import { localAddressToward } from '../discovery/local-address.ts'
import { selfCommand } from '../self-command.ts'
import { fingerprint } from '../trust/identity.ts'
import { loadLocalIdentity } from '../trust/local-identity.ts'
import { machineSerial } from '../trust/machine-info.ts'
import { writeMlxFiles } from './mlx-files.ts'
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
    // until interrupted, or until the head exits (`cluster stop`, a crash): the others go with it
    const headCode = await Promise.race([
      new Promise<null>((done) => {
        process.once('SIGINT', () => done(null))
        process.once('SIGTERM', () => done(null))
      }),
      cluster.exited(0),
    ])
    if (headCode !== null) consola.info(`the head exited (code ${headCode}); stopping the other nodes`)
    await cluster.stop()
    if (headCode)
      throw new DbcError('E_HEAD_EXITED', `the head exited with code ${headCode}`, 'see its [node 0] lines above')
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
      'Two seeds in one step: pin the peer (as trust pin) and remember its link address, so that serve --peers (no list) or plain serve joins it; --hostfile writes MLX distributed’s files for the members remembered',
  },
  args: {
    'peer-serial': {
      type: 'string',
      description:
        "The peer's serial (its --node-name, or its machine serial); required unless only --hostfile is asked",
      valueHint: 'SERIAL',
    },
    'peer-ip': {
      type: 'string',
      description:
        "The peer's IPv4 address on the link (e.g. its Thunderbolt bridge address); required with --peer-serial",
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
    hostfile: {
      type: 'string',
      description:
        'Write MLX ring’s hostfile (JSON, rank order, "ip:port" on each member’s link address) for the members remembered, and keep it: for MLX tools run beside dbcluster',
      valueHint: 'FILE',
    },
    'mlx-port': {
      type: 'string',
      description: 'With --hostfile: the port MLX listens on, on every member',
      default: '47100',
    },
    'devices-file': {
      type: 'string',
      description: 'With --hostfile: also write jaccl’s RDMA devices matrix here (needs --rdma-devices)',
      valueHint: 'FILE',
    },
    'rdma-devices': {
      type: 'string',
      description: 'With --devices-file: each member’s RDMA device on the cable, comma-separated in rank order',
      valueHint: 'LIST',
    },
    yes: { type: 'boolean', description: 'Pin without asking (needed without a terminal)', default: false },
    replace: {
      type: 'boolean',
      description: 'Allow replacing a different key already pinned for the peer',
      default: false,
    },
  },
  async run({ args }) {
    const mlxFiles = () => {
      if (!args.hostfile) {
        if (args['devices-file']) throw new UsageError('--devices-file goes with --hostfile')
        return
      }
      const cluster = loadRememberedPeers(rememberedPeersFile())
      if (!cluster)
        throw new UsageError(
          `no cluster is remembered in ${rememberedPeersFile()}`,
          'run dbcluster cluster setup --peer-serial … --peer-ip … first (or with --hostfile in the same call)',
        )
      const port = parseHostPort(`127.0.0.1:${args['mlx-port']}`, '--mlx-port').port
      const o = { hostfile: args.hostfile, devicesFile: args['devices-file'], rdmaDevices: args['rdma-devices'], port }
      const env = writeMlxFiles(cluster, o)
      consola.success(
        `MLX distributed's files for ${cluster.nodes.length} members (rank ${cluster.rank} is this node):`,
      )
      for (const line of env) console.log(`export ${line}`)
    }
    if (args['peer-serial'] === undefined && args.hostfile) return mlxFiles()
    if (args['peer-serial'] === undefined || args['peer-ip'] === undefined)
      throw new UsageError(
        'give --peer-serial and --peer-ip (the peer to pin and remember), or --hostfile alone',
        'e.g. dbcluster cluster setup --peer-serial mac-b --peer-ip 169.254.10.2 --key BASE64',
      )
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
    mlxFiles()
  },
})

export default defineCommand({
  meta: { name: 'cluster', description: 'Pipeline clusters: set one up, run one locally, show a running one' },
  subCommands: {
    setup,
    local,
    status: () => import('./cluster-status.ts').then((m) => m.default),
    stop: () => import('./cluster-stop.ts').then((m) => m.default),
    logs: () => import('./cluster-logs.ts').then((m) => m.default),
    devices: () => import('./cluster-devices.ts').then((m) => m.default),
  },
})
