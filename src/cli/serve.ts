/** `dbcluster serve`: the OpenAI-compatible API over this machine's model (the demo model when none is given), alone,
 * as the head or a stage of a pipeline cluster, or as a rank of a tensor-parallel group (src/node/ puts the node
 * together; this command parses flags and serves). */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { basename, resolve } from 'node:path'
import { createApp } from '../api/app.ts'
import { openFileDescriptors, serveHttp } from '../api/http-server.ts'
import { usableMemoryBytes } from '../cluster/usable-memory.ts'
import { authorizeByPinsOrCoordinator } from '../coordinator/node-registration.ts'
import { ServingMetrics } from '../engine/metrics.ts'
import { Scheduler } from '../engine/scheduler.ts'
import { UsageError } from '../errors.ts'
import { positiveInt } from './number-list.ts'
import { ModelTokenizer } from '../model/tokenizer.ts'
import { clusterMembership, coordinatorSession } from '../node/cluster-membership.ts'
import { modelFolder } from '../node/model-folder.ts'
import { startNode } from '../node/start-node.ts'
import { parseBackendChoice, selectBackend } from '../tensor/select-backend.ts'
import { defaultPinFile, loadLocalIdentity } from '../trust/local-identity.ts'
import { openLocalPinStore } from '../trust/local-pin-store.ts'
import { machineSerial } from '../trust/machine-info.ts'
import { authorizeByPins } from '../trust/pinned-keys.ts'
import { progressPrinter } from './model-pull.ts'


const nonNegative = (value: string, name: string): number => {
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number of seconds >= 0, got '${value}'`)
  return n
}

export default defineCommand({
  meta: { name: 'serve', description: 'Serve a model with an OpenAI-compatible API (chat and text completions, streaming, metrics)' },
  args: {
    model: { type: 'string', description: 'Model folder (MLX-community layout) or hub repository ORG/NAME[@REVISION] (pulled once into the hub cache); default: a synthetic demo model created on first run. On a stage (rank ≥ 1) a folder, optional: without it the head sends the files of its layers', valueHint: 'DIR|REPO' },
    host: { type: 'string', description: 'Address to listen on (loopback by default)', default: '127.0.0.1' },
    port: { type: 'string', description: 'TCP port (0 picks a free one)', default: '8080' },
    'api-key': { type: 'string', description: 'Require the key on every route: Authorization: Bearer KEY, or a browser\'s Basic prompt with KEY as the password for /dashboard (or set DBCLUSTER_API_KEY)' },
    'public-health': { type: 'boolean', description: 'With --api-key: GET /health stays open, answering only {status} (for load balancers)' },
    'max-batch': { type: 'string', description: 'Most sequences decoded together (KV slots)', default: '8' },
    'max-queue': { type: 'string', description: 'Most requests waiting for a slot; beyond it requests get 429', default: '64' },
    'max-context': { type: 'string', description: 'Tokens of KV cache per sequence (prompt + completion)', default: '4096' },
    'prefill-chunk': { type: 'string', description: 'Prompt tokens per step, interleaved with decoding', default: '256' },
    'request-timeout': { type: 'string', description: 'Seconds before an unfinished request fails', default: '300' },
    'idle-timeout': { type: 'string', description: 'Seconds an HTTP connection may stay silent while idle or sending its request (1–255); lifted while its answer is computed', default: '30' },
    'max-requests-per-client': { type: 'string', description: 'HTTP requests open at once from one client address; more get 429', default: '128' },
    'model-id': { type: 'string', description: 'Model name reported by /v1/models (default: the folder name)' },
    backend: { type: 'string', description: 'Compute backend: cpu, mlx or auto', default: 'auto' },
    threads: { type: 'string', description: 'CPU threads (default: all cores)', valueHint: 'N' },
    peers: { type: 'string', description: 'Form a pipeline cluster: every node’s link address in rank order (host:port,host:port,…)', valueHint: 'LIST' },
    rank: { type: 'string', description: 'This node’s rank in --peers (0 = the head, which serves the API)', default: '0' },
    split: { type: 'string', description: 'Layers per node, e.g. 18,10 (default: each node gets its share of the compute per step, or of the memory where that does not fit)', valueHint: 'N,N' },
    memory: { type: 'string', description: 'Memory this node offers the model (weights + KV), e.g. 12G (default: 75% of RAM)', valueHint: 'SIZE' },
    plan: { type: 'boolean', description: 'Print the plan (layers, weights and KV per node, headroom) without loading anything, then exit; on the head of a cluster it waits for every stage to join' },
    'node-name': { type: 'string', description: 'This node’s serial for pins and handshakes (default: the machine serial)' },
    'cluster-id': { type: 'string', description: 'Cluster id bound into every handshake and frame', default: 'dbcluster' },
    'ping-interval': { type: 'string', description: 'Seconds between link pings; 3 missed = peer unavailable', default: '5' },
    discover: { type: 'boolean', description: 'Form the cluster by itself: find the nodes on the link-local (Thunderbolt) link by signed beacons, trust only pinned keys, elect ranks by address (lowest = head)' },
    nodes: { type: 'string', description: 'With --discover: how many nodes the cluster has, this one included', default: '2' },
    iface: { type: 'string', description: 'With --discover: the interface to use (default: the first with a 169.254/16 address, e.g. bridge0)', valueHint: 'NAME' },
    'link-port': { type: 'string', description: 'With --discover: TCP port of this node’s sealed link', default: '47391' },
    coordinator: { type: 'string', description: 'Coordinator URL (cluster nodes): this node registers there with a signed attestation, and a peer it has no pin for is pinned from the coordinator\'s attested key', valueHint: 'URL' },
    'coordinator-token': { type: 'string', description: 'API token for --coordinator (or set DBCLUSTER_COORDINATOR_TOKEN)' },
    tp: { type: 'string', description: 'Tensor parallel: ranks sharing each layer; rank 0 serves the API, the others follow (over sealed sockets, or MLX distributed: see --tp-transport)', default: '1', valueHint: 'N' },
    'tp-rank': { type: 'string', description: 'With --tp: this process\'s rank (0 listens on --tp-listen, the others dial --tp-peer)', default: '0', valueHint: 'R' },
    'tp-listen': { type: 'string', description: 'With --tp, rank 0: where the ranks meet (loopback by default: give the cable\'s address for other machines)', default: '127.0.0.1:47200', valueHint: 'HOST:PORT' },
    'tp-peer': { type: 'string', description: 'With --tp, ranks > 0: rank 0\'s meeting HOST:PORT', valueHint: 'HOST:PORT' },
    'tp-transport': { type: 'string', description: 'With --tp: sealed (AES-256-GCM sockets between pinned nodes, any backend), jaccl (MLX over Thunderbolt RDMA, macOS, NOT encrypted), ring (MLX over TCP, NOT encrypted), or auto (= sealed: the MLX transports are opt-in)', default: 'auto', valueHint: 'auto|sealed|jaccl|ring' },
    'rdma-device': { type: 'string', description: 'With --tp over jaccl: this rank\'s RDMA device, or one per rank with - for this rank', valueHint: 'NAME|LIST' },
    'tp-timeout': { type: 'string', description: 'With --tp: seconds to wait for the other ranks', default: '60', valueHint: 'S' },
    'resume-window': { type: 'string', description: 'Seconds a request whose stage or tensor-parallel rank was lost waits for the ring to be rebuilt or the rank to rejoin, then resumes (re-prefilled) or fails (default: 3 ping intervals)', valueHint: 'S' },
  },
  async run({ args }) {
    const port = Number(args.port)
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be 0..65535, got '${args.port}'`)
    const tpSize = positiveInt(args.tp, 'tp')
    const clustered = Boolean(args.peers || args.discover || tpSize > 1)
    if (args.coordinator && !clustered) throw new UsageError('--coordinator is for cluster nodes (with --peers, --discover or --tp)')
    const serial = args['node-name'] ?? machineSerial()
    const pins = openLocalPinStore(defaultPinFile()).store
    const choice = parseBackendChoice(args.backend)
    const transport = args['tp-transport'] === 'auto' ? 'sealed' : args['tp-transport']
    if (transport !== 'sealed' && transport !== 'jaccl' && transport !== 'ring') throw new UsageError(`unknown --tp-transport '${transport}'`, 'use auto, sealed, jaccl or ring')
    // a node alone (or an MLX rank, unsealed) needs no identity key; a node that meets others over sealed links does
    const sealedLinks = Boolean(args.coordinator || args.peers || args.discover || (tpSize > 1 && transport === 'sealed'))
    const identity = sealedLinks ? loadLocalIdentity().identity : undefined
    const coordinator = args.coordinator ? await coordinatorSession(args.coordinator, args['coordinator-token'] ?? process.env.DBCLUSTER_COORDINATOR_TOKEN, identity!, serial, pins) : undefined
    const discover = args.discover ? { nodes: positiveInt(args.nodes, 'nodes'), iface: args.iface, linkPort: portNumber(args['link-port'], 'link-port') } : undefined
    const membership = args.peers || discover ? await clusterMembership({ peers: args.peers, rank: Number(args.rank), discover }, identity!, serial, pins, coordinator) : null
    if (tpSize > 1 && membership) throw new UsageError('--tp cannot be combined with a pipeline cluster (--peers / --discover) yet', 'run tensor parallel alone, or pipeline parallel alone')
    const isStage = membership !== null && membership.rank > 0
    // activations leave this machine sealed unless the user opted into MLX's unencrypted transports by name
    const overMlx = tpSize > 1 && transport !== 'sealed'
    if (overMlx && choice === 'cpu') throw new UsageError(`--tp-transport ${transport} runs over MLX distributed and needs the mlx backend`, 'use --backend mlx (or auto), or --tp-transport sealed')
    const modelDir = args.model && !isStage ? await pulledModel(args.model) : args.model
    const { backend, reason } = selectBackend(overMlx ? 'mlx' : choice, { threads: args.threads ? positiveInt(args.threads, 'threads') : undefined })
    consola.info(reason)
    const metrics = new ServingMetrics()
    const authorize = coordinator ? authorizeByPinsOrCoordinator(pins, coordinator) : authorizeByPins(pins)
    const pingIntervalMs = Number(args['ping-interval']) * 1000
    // a stage ends on SIGINT / SIGTERM; a serving node finishes its requests first (below)
    const stop = new AbortController()
    if (isStage) for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => stop.abort())
    const tpRank = Number(args['tp-rank'])
    if (tpSize > 1 && !(Number.isInteger(tpRank) && tpRank >= 0 && tpRank < tpSize)) throw new UsageError(`--tp-rank must be 0..${tpSize - 1}, got '${args['tp-rank']}'`)
    const started = await startNode({
      modelDir,
      modelSpec: args.model,
      serial,
      backend,
      maxBatch: positiveInt(args['max-batch'], 'max-batch'),
      maxLen: positiveInt(args['max-context'], 'max-context'),
      usableBytes: usableMemoryBytes(args.memory),
      plan: args.plan === true,
      membership,
      split: args.split,
      link: identity && membership ? { identity, serial, clusterId: args['cluster-id'], authorize, pingIntervalMs, backoffMs: Math.max(500, pingIntervalMs) } : undefined,
      tensorParallel:
        tpSize > 1
          ? { size: tpSize, rank: tpRank, transport, listen: args['tp-listen'], peer: args['tp-peer'], rdmaDevice: args['rdma-device'], timeoutMs: positiveInt(args['tp-timeout'], 'tp-timeout') * 1000, identity: identity!, authorize, clusterId: args['cluster-id'] }
          : null,
      metrics,
      signal: stop.signal,
    })
    if (started.role === 'finished') return
    const { node } = started
    const tokenizer = new ModelTokenizer(node.modelDir, node.stage.config.eosTokenIds)
    const scheduler = new Scheduler(
      node.pipeline,
      (ids) => tokenizer.decode(ids),
      {
        maxBatch: positiveInt(args['max-batch'], 'max-batch'),
        maxQueue: positiveInt(args['max-queue'], 'max-queue'),
        prefillChunk: positiveInt(args['prefill-chunk'], 'prefill-chunk'),
        requestTimeoutMs: positiveInt(args['request-timeout'], 'request-timeout') * 1000,
        microBatches: node.microBatches,
        resumeWindowMs: 1000 * (args['resume-window'] !== undefined ? nonNegative(args['resume-window'], 'resume-window') : 3 * Number(args['ping-interval'])),
      },
      metrics,
    )
    node.connect(scheduler)
    const modelId = args['model-id'] ?? basename(resolve(node.modelDir))
    const app = createApp({ scheduler, tokenizer, modelId, metrics, health: node.health, apiKey: args['api-key'] ?? process.env.DBCLUSTER_API_KEY, publicHealth: args['public-health'] === true })
    const idleTimeoutSeconds = positiveInt(args['idle-timeout'], 'idle-timeout')
    if (idleTimeoutSeconds > 255) throw new UsageError(`--idle-timeout must be 1..255 seconds, got '${args['idle-timeout']}'`)
    const http = serveHttp(app, { hostname: args.host, port, idleTimeoutSeconds, maxPerClient: positiveInt(args['max-requests-per-client'], 'max-requests-per-client'), metrics })
    metrics.sample = () => {
      const open = http.open()
      metrics.httpOpenRequests.set(open.requests)
      metrics.httpOpenClients.set(open.clients)
      const fds = openFileDescriptors()
      if (fds !== null) metrics.openFds.set(fds)
    }
    const { server } = http
    consola.success(`serving ${modelId} on http://${server.hostname}:${server.port}/v1 (${backend.name} backend, batch ${scheduler.options.maxBatch})`)
    console.log(`listening on http://${server.hostname}:${server.port}`)
    await new Promise<void>((done) => {
      const finish = (signal: string) => {
        consola.info(`${signal}: finishing — no new requests`)
        scheduler.close()
        void server.stop(false).then(() => done())
      }
      process.once('SIGINT', () => finish('SIGINT'))
      process.once('SIGTERM', () => finish('SIGTERM'))
    })
  },
})

/** --model as a folder, or a hub repository pulled once into the cache (with a progress line). */
async function pulledModel(spec: string): Promise<string> {
  const printer = progressPrinter(Boolean(process.stderr.isTTY), 2000)
  try {
    return await modelFolder(spec, (p) => printer.update(p))
  } finally {
    printer.clear()
  }
}

function portNumber(value: string, name: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`--${name} must be 1..65535, got '${value}'`)
  return n
}
