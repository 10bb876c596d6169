/** `dbcluster serve`: the OpenAI-compatible API over this machine's model (the demo model when none is given). */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { basename, resolve } from 'node:path'
import { createApp } from '../api/app.ts'
import { openFileDescriptors, serveHttp } from '../api/http-server.ts'
import { UsageError } from '../errors.ts'
import { ServingMetrics } from '../engine/metrics.ts'
import { LocalPipeline } from '../engine/pipeline.ts'
import { Scheduler } from '../engine/scheduler.ts'
import { ensureDemoModel } from '../model/demo-model.ts'
import { HeadPipeline, StageNode } from '../cluster/ring.ts'
import { layerRanges, parsePeers } from '../cluster/membership.ts'
import type { RingAddress } from '../cluster/ring.ts'
import { CoordinatorClient } from '../coordinator/client.ts'
import { formCluster } from '../discovery/form-cluster.ts'
import { ClusterPlanner } from '../cluster/cluster-planner.ts'
import { describePlan, formatGiB, PlanError, planLayers } from '../cluster/plan-layers.ts'
import { RoleListener } from '../cluster/role-listener.ts'
import { runStage } from '../cluster/run-stage.ts'
import { PLAN_ONLY } from '../cluster/stage-join.ts'
import { usableMemoryBytes } from '../cluster/usable-memory.ts'
import { hubFromEnv } from '../distribution/hub-pull.ts'
import { manifestFor } from '../distribution/manifest.ts'
import { resolveModelDir } from '../distribution/model-source.ts'
import { existsSync, writeSync } from 'node:fs'
import { progressPrinter } from './model-pull.ts'
import { startTensorParallel } from '../tensor-parallel/start-mlx.ts'
import { startSealedTensorParallel } from '../tensor-parallel/start-sealed.ts'
import { SealedTpGroup, type TpChannel } from '../tensor-parallel/sealed-group.ts'
import { servingFingerprint } from '../model/serving-fingerprint.ts'
import { followTensorParallel, TensorParallelPipeline, type StepBroadcast } from '../tensor-parallel/pipeline.ts'
import { followRankZero, keepTensorParallelWhole } from '../tensor-parallel/recovery.ts'
import { checkpointFootprint } from '../model/footprint.ts'
import type { Pipeline } from '../model/pipeline.ts'
import { ModelStage, readModelConfig } from '../model/shard.ts'
import { machineSerial } from '../trust/machine-info.ts'
import { authorizeByPins, type PinStore } from '../trust/pinned-keys.ts'
import { authorizeByPinsOrCoordinator, registerNode } from '../coordinator/node-registration.ts'
import { openLocalPinStore } from '../trust/local-pin-store.ts'
import { fingerprint } from '../trust/identity.ts'
import { defaultPinFile, loadLocalIdentity } from '../trust/local-identity.ts'
import { ModelTokenizer } from '../model/tokenizer.ts'
import { DTYPE_BYTES } from '../tensor/backend.ts'
import { parseBackendChoice, selectBackend } from '../tensor/select-backend.ts'

const positiveInt = (value: string, name: string): number => {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${value}'`)
  return n
}

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
    const serial = args['node-name'] ?? machineSerial()
    const pins = openLocalPinStore(defaultPinFile()).store
    const coordinator = await coordinatorFor(args, serial, pins)
    const membership = await clusterMembership(args, serial, pins, coordinator)
    // a stage (rank ≥ 1) without --model gets its files from the head
    const isStage = membership !== null && membership.rank > 0
    let dir = args.model && !isStage ? await modelFolder(args.model) : args.model
    if (!dir && !isStage) {
      const demo = await ensureDemoModel((line) => consola.start(`creating the demo model: ${line}`))
      dir = demo.dir
      consola.info(`${demo.created ? 'created' : 'using'} the synthetic demo model at ${dir} (random weights: its text is gibberish; pass --model DIR for a real one)`)
    }
    const tpSize = positiveInt(args.tp, 'tp')
    if (tpSize > 1 && membership) throw new UsageError('--tp cannot be combined with a pipeline cluster (--peers / --discover) yet', 'run tensor parallel alone, or pipeline parallel alone')
    const choice = parseBackendChoice(args.backend)
    const tpTransport = args['tp-transport']
    if (!['auto', 'sealed', 'jaccl', 'ring'].includes(tpTransport)) throw new UsageError(`unknown --tp-transport '${tpTransport}'`, 'use auto, sealed, jaccl or ring')
    const overMlx = tpSize > 1 && (tpTransport === 'jaccl' || tpTransport === 'ring')
    if (overMlx && choice === 'cpu') throw new UsageError(`--tp-transport ${tpTransport} runs over MLX distributed and needs the mlx backend`, 'use --backend mlx (or auto), or --tp-transport sealed')
    const { backend, reason } = selectBackend(overMlx ? 'mlx' : choice, { threads: args.threads ? positiveInt(args.threads, 'threads') : undefined })
    consola.info(reason)
    // activations leave this machine sealed unless the user opted into MLX's unencrypted transports by name
    const sealedTp = tpSize > 1 && !overMlx
    const maxBatch = positiveInt(args['max-batch'], 'max-batch')
    const maxLen = positiveInt(args['max-context'], 'max-context')
    const metrics = new ServingMetrics()
    let pipeline: Pipeline
    let stage: ModelStage
    let ring: HeadPipeline | null = null
    let planner: ClusterPlanner | null = null
    let tpGroup: SealedTpGroup | null = null
    /** Rank 0 of a tensor-parallel group: each rank summarizes its vocabulary slice ('split') or rank 0 gathers the logits. */
    let tpSampling: 'split' | 'gathered' = 'gathered'
    let tpPipeline: TensorParallelPipeline | null = null
    let tpRejoin: ((announce: boolean) => Promise<TpChannel[]>) | undefined
    const usableBytes = usableMemoryBytes(args.memory)
    if (args.plan && !membership) {
      // one node: the whole model here, checked against this machine's memory
      const plan = planLayers([{ id: serial, usableBytes }], checkpointFootprint(dir!, DTYPE_BYTES[backend.kvDtype]), { kv: { sequences: maxBatch, tokens: maxLen } })
      for (const line of describePlan(plan)) console.log(line)
      if (!plan.fits) process.exitCode = 1
      return
    }
    if (membership) {
      const { peers, rank } = membership
      const { identity } = loadLocalIdentity()
      const link = {
        identity,
        serial,
        clusterId: args['cluster-id'],
        authorize: coordinator ? authorizeByPinsOrCoordinator(pins, coordinator) : authorizeByPins(pins),
        pingIntervalMs: Number(args['ping-interval']) * 1000,
        backoffMs: Math.max(500, Number(args['ping-interval']) * 1000),
      }
      if (rank > 0) {
        if (args.plan) throw new UsageError('--plan is for the head (rank 0): it gathers every node’s memory and prints the plan')
        if (args.split) consola.warn('--split is decided by the head (rank 0); ignored on a stage')
        const stop = new AbortController()
        process.once('SIGINT', () => stop.abort())
        process.once('SIGTERM', () => stop.abort())
        consola.info(`rank ${rank} of ${peers.length}: joining the head at ${peers[0]!.host}:${peers[0]!.port}; link ${peers[rank]!.host}:${peers[rank]!.port}; offering ${formatGiB(usableBytes)}`)
        await runStage({
          rank,
          peers,
          link,
          backend,
          usableBytes,
          modelDir: args.model,
          retryMs: link.backoffMs,
          signal: stop.signal,
          onReady: () => console.log(`stage ${rank} ready`),
        })
        return
      }
      dir = dir! // the head always has a model (the demo one at least)
      const config = readModelConfig(dir)
      const split = args.split ? layerRanges(config.numLayers, peers.length, args.split).map(([lo, hi]) => hi - lo) : undefined
      const listener = new RoleListener(peers[0]!.host, peers[0]!.port, link)
      planner = new ClusterPlanner({
        listener,
        nodes: peers.length,
        head: { serial, usableBytes, fingerprint: fingerprint(identity.publicKey) },
        footprint: checkpointFootprint(dir, DTYPE_BYTES[backend.kvDtype]),
        split,
        slots: maxBatch,
        maxLen,
        model: modelName(args.model ?? dir),
        onProgress: (line) => consola.start(line),
      })
      const plan = await planner.gather()
      const lines = describePlan(plan)
      if (args.plan) {
        for (const line of lines) console.log(line)
        planner.refuse(PLAN_ONLY, 'the head only printed the plan (--plan)')
        await Bun.sleep(200) // let the answers leave before the links close
        listener.stop()
        if (!plan.fits) process.exitCode = 1
        return
      }
      for (const line of lines) consola.info(line)
      if (!plan.fits) {
        const short = plan.shortfalls.map((s) => `${s.node} is short by ${formatGiB(s.shortBytes)}`).join('; ')
        planner.refuse('E_PLAN_FIT', `the plan does not fit: ${short}`)
        await Bun.sleep(200)
        listener.stop()
        throw new PlanError('E_PLAN_FIT', `the plan does not fit: ${short}`, 'add a node or memory (--memory), lower --max-batch or --max-context, or give a --split')
      }
      let hashing = ''
      const manifest = manifestFor(dir, (file) => file !== hashing && consola.start(`hashing ${(hashing = file)} for the manifest`))
      planner.commit(plan, { dir, manifest, identity })
      const mine = plan.stages[0]!
      stage = ModelStage.load(dir, backend, { lo: mine.lo, hi: mine.hi, slots: maxBatch, maxLen })
      consola.info(`rank 0 of ${peers.length}: layers [${mine.lo}, ${mine.hi}) of ${config.numLayers}; link ${peers[0]!.host}:${peers[0]!.port}`)
      ring = new HeadPipeline({
        rank,
        peers,
        stage,
        link,
        listener,
        onStepTiming: (t) => {
          t.stageSeconds.forEach((s, r) => metrics.stageStepTime.observe(String(r), s))
          metrics.hopTime.observe(t.hopSeconds)
          if (t.decode) {
            t.stageSeconds.forEach((s, r) => metrics.decodeStageStepTime.observe(String(r), s))
            metrics.decodeHopTime.observe(t.hopSeconds)
          }
        },
      })
      pipeline = ring
    } else if (tpSize > 1) {
      const tpRank = Number(args['tp-rank'])
      if (!Number.isInteger(tpRank) || tpRank < 0 || tpRank >= tpSize) throw new UsageError(`--tp-rank must be 0..${tpSize - 1}, got '${args['tp-rank']}'`)
      const timeoutMs = positiveInt(args['tp-timeout'], 'tp-timeout') * 1000
      const started = sealedTp
        ? await startSealedTensorParallel(
            { size: tpSize, rank: tpRank, listen: args['tp-listen'], peer: args['tp-peer'], timeoutMs, identity: loadLocalIdentity().identity, serial, authorize: coordinator ? authorizeByPinsOrCoordinator(pins, coordinator) : authorizeByPins(pins), clusterId: args['cluster-id'], fingerprint: servingFingerprint(dir!, { maxBatch, maxLen, tp: tpSize }), log: (l) => consola.info(l) },
            backend,
          )
        : await startTensorParallel({ size: tpSize, rank: tpRank, transport: tpTransport, listen: args['tp-listen'], peer: args['tp-peer'], rdmaDevice: args['rdma-device'], timeoutMs }, backend)
      const { group, tp } = started
      if ('rejoin' in started) tpRejoin = started.rejoin
      stage = ModelStage.load(dir!, backend, { slots: maxBatch, maxLen, tp })
      if (tpRank > 0) {
        // the other ranks replay rank 0's steps on their shard until rank 0 stops; rank 0 serves the API
        const steps = group instanceof SealedTpGroup && tpRejoin ? await followRankZero(stage, group, tpRejoin, args['tp-peer']!) : followOnce(stage, group)
        consola.info(`tensor-parallel rank ${tpRank}: rank 0 stopped after ${steps} steps`)
        group.close()
        return
      }
      if (group instanceof SealedTpGroup) tpGroup = group
      tpPipeline = new TensorParallelPipeline(stage, group, (seconds) => metrics.tpExchangeTime.observe(seconds))
      tpSampling = tpPipeline.splitSampling ? 'split' : 'gathered'
      const stopping = tpPipeline
      process.once('exit', () => stopping.stop())
      pipeline = tpPipeline
    } else {
      stage = ModelStage.load(dir!, backend, { slots: maxBatch, maxLen })
      pipeline = new LocalPipeline([stage])
    }
    const tokenizer = new ModelTokenizer(dir!, stage.config.eosTokenIds)
    const scheduler = new Scheduler(
      pipeline,
      (ids) => tokenizer.decode(ids),
      {
        maxBatch,
        maxQueue: positiveInt(args['max-queue'], 'max-queue'),
        prefillChunk: positiveInt(args['prefill-chunk'], 'prefill-chunk'),
        requestTimeoutMs: positiveInt(args['request-timeout'], 'request-timeout') * 1000,
        // with N stages, N micro-batches in flight keep every stage busy at once
        microBatches: membership ? membership.peers.length : 1,
        resumeWindowMs: 1000 * (args['resume-window'] !== undefined ? nonNegative(args['resume-window'], 'resume-window') : 3 * Number(args['ping-interval'])),
      },
      metrics,
    )
    if (tpGroup && tpPipeline && tpRejoin) keepTensorParallelWhole(tpGroup, tpPipeline, tpRejoin, scheduler)
    if (ring) {
      ring.onStalled((reason) => scheduler.setStalled(reason))
      scheduler.setDegraded(ring.degraded)
      let formed = false // the hops not yet up while the ring first forms are not link errors
      ring.onDegraded((reason) => {
        scheduler.setDegraded(reason)
        if (!reason) formed = true
        else if (formed) metrics.linkErrors.inc({ reason: reason.split(':')[0] ?? 'link' })
      })
    }
    const modelId = args['model-id'] ?? basename(resolve(dir!))
    const app = createApp({
      scheduler,
      tokenizer,
      modelId,
      metrics,
      apiKey: args['api-key'] ?? process.env.DBCLUSTER_API_KEY,
      publicHealth: args['public-health'] === true,
      health: () => ({
        backend: backend.name,
        nodes: membership ? membership.peers.length : tpSize,
        ...(tpSize > 1 ? { tensor_parallel: { ranks: tpSize, transport: sealedTp ? 'sealed' : 'mlx', sampling: tpSampling } } : {}),
        layers: stage.config.numLayers,
        head_layers: [stage.range.lo, stage.range.hi],
        kv_slots_free: stage.cache.freeSlots,
        ...(ring ? { ring: ring.status() } : {}),
        ...(planner ? { members: planner.members(backend.name) } : {}),
      }),
    })
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
    consola.success(`serving ${modelId} on http://${server.hostname}:${server.port}/v1 (${backend.name} backend, batch ${maxBatch})`)
    console.log(`listening on http://${server.hostname}:${server.port}`)
    await new Promise<void>((done) => {
      const stop = (signal: string) => {
        consola.info(`${signal}: finishing — no new requests`)
        scheduler.close()
        void server.stop(false).then(() => done())
      }
      process.once('SIGINT', () => stop('SIGINT'))
      process.once('SIGTERM', () => stop('SIGTERM'))
    })
  },
})

type ServeArgs = { peers?: string; rank: string; tp: string; discover?: boolean; nodes: string; iface?: string; 'link-port': string; coordinator?: string; 'coordinator-token'?: string }

/** Who is in the cluster and which rank this node is: from --peers/--rank, or found on the cable (--discover); null
 * when this node serves alone. */
/** With --coordinator on a cluster node: the client (for pinning peers) after registering this node, so its peers can
 * pin its key; a coordinator that refuses or cannot be reached is reported and the node goes on with the pins it has. */
async function coordinatorFor(args: ServeArgs, serial: string, pins: PinStore): Promise<CoordinatorClient | undefined> {
  if (!args.coordinator) return undefined
  if (!args.peers && !args.discover && !(Number(args.tp) > 1)) throw new UsageError('--coordinator is for cluster nodes (with --peers, --discover or --tp)')
  const token = args['coordinator-token'] ?? process.env.DBCLUSTER_COORDINATOR_TOKEN
  if (!token) throw new UsageError('--coordinator needs --coordinator-token (or DBCLUSTER_COORDINATOR_TOKEN)', "create one with 'dbcluster coordinator token create --account NAME' where the coordinator runs")
  const client = new CoordinatorClient({ url: args.coordinator, token, pins })
  await registerNode(client, loadLocalIdentity().identity, serial).registered
  return client
}

async function clusterMembership(args: ServeArgs, serial: string, pins: PinStore, coordinator: CoordinatorClient | undefined): Promise<{ peers: RingAddress[]; rank: number } | null> {
  if (args.discover && args.peers) throw new UsageError('give either --peers (static membership) or --discover, not both')
  if (args.peers) {
    const peers = parsePeers(args.peers)
    const rank = Number(args.rank)
    if (!Number.isInteger(rank) || rank < 0 || rank >= peers.length) throw new UsageError(`--rank must be 0..${peers.length - 1}`)
    return { peers, rank }
  }
  if (!args.discover) return null
  const linkPort = Number(args['link-port'])
  if (!Number.isInteger(linkPort) || linkPort < 1 || linkPort > 65535) throw new UsageError(`--link-port must be 1..65535, got '${args['link-port']}'`)
  const stop = new AbortController()
  const onSignal = () => stop.abort()
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    const formed = await formCluster({
      identity: loadLocalIdentity().identity,
      serial,
      linkPort,
      iface: args.iface,
      nodes: positiveInt(args.nodes, 'nodes'),
      pins,
      coordinator,
      signal: stop.signal,
    })
    return { peers: formed.peers, rank: formed.rank }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

/** A folder as given, or a hub repository resolved to its cached snapshot (pulled first when missing, with progress). */
async function modelFolder(spec: string): Promise<string> {
  if (existsSync(spec)) return spec
  const printer = progressPrinter(Boolean(process.stderr.isTTY), 2000)
  try {
    return await resolveModelDir(spec, { hub: hubFromEnv(), onProgress: (p) => printer.update(p) })
  } finally {
    printer.clear()
  }
}

/** The name stages store received files under: the folder's name, or ORG--NAME for a hub repository. */
function modelName(spec: string): string {
  return existsSync(spec) ? basename(resolve(spec)) : spec.split('@')[0]!.replace('/', '--')
}

/** An MLX group's rank > 0: follows rank 0 until it stops (a lost rank ends the process: see mlx-group.ts). The line is
 * written synchronously: from here on this thread blocks in the group's receive. */
function followOnce(stage: ModelStage, group: StepBroadcast): number {
  writeSync(1, `tensor-parallel rank ${group.rank} ready: following rank 0\n`)
  return followTensorParallel(stage, group)
}
