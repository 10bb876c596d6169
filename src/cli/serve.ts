/** `dbcluster serve`: the OpenAI-compatible API over this machine's model (the demo model when none is given). */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { basename, resolve } from 'node:path'
import { createApp } from '../api/app.ts'
import { UsageError } from '../errors.ts'
import { ServingMetrics } from '../engine/metrics.ts'
import { LocalPipeline } from '../engine/pipeline.ts'
import { Scheduler } from '../engine/scheduler.ts'
import { ensureDemoModel } from '../model/demo-model.ts'
import { HeadPipeline, StageNode } from '../cluster/ring.ts'
import { layerRanges, parsePeers } from '../cluster/membership.ts'
import type { Pipeline } from '../model/pipeline.ts'
import { ModelStage, readModelConfig } from '../model/shard.ts'
import { machineSerial } from '../trust/machine-info.ts'
import { authorizeByPins, FilePinStore } from '../trust/pinned-keys.ts'
import { defaultPinFile, loadLocalIdentity } from '../trust/local-identity.ts'
import { ModelTokenizer } from '../model/tokenizer.ts'
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
    model: { type: 'string', description: 'Model folder (MLX-community layout); default: a synthetic demo model created on first run', valueHint: 'DIR' },
    host: { type: 'string', description: 'Address to listen on (loopback by default)', default: '127.0.0.1' },
    port: { type: 'string', description: 'TCP port (0 picks a free one)', default: '8080' },
    'api-key': { type: 'string', description: 'Require Authorization: Bearer KEY on /v1 routes (or set DBCLUSTER_API_KEY)' },
    'max-batch': { type: 'string', description: 'Most sequences decoded together (KV slots)', default: '8' },
    'max-queue': { type: 'string', description: 'Most requests waiting for a slot; beyond it requests get 429', default: '64' },
    'max-context': { type: 'string', description: 'Tokens of KV cache per sequence (prompt + completion)', default: '4096' },
    'prefill-chunk': { type: 'string', description: 'Prompt tokens per step, interleaved with decoding', default: '256' },
    'request-timeout': { type: 'string', description: 'Seconds before an unfinished request fails', default: '300' },
    'model-id': { type: 'string', description: 'Model name reported by /v1/models (default: the folder name)' },
    backend: { type: 'string', description: 'Compute backend: cpu, mlx or auto', default: 'auto' },
    threads: { type: 'string', description: 'CPU threads (default: all cores)', valueHint: 'N' },
    peers: { type: 'string', description: 'Form a pipeline cluster: every node’s link address in rank order (host:port,host:port,…)', valueHint: 'LIST' },
    rank: { type: 'string', description: 'This node’s rank in --peers (0 = the head, which serves the API)', default: '0' },
    split: { type: 'string', description: 'Layers per node, e.g. 18,10 (default: an even split)', valueHint: 'N,N' },
    'node-name': { type: 'string', description: 'This node’s serial for pins and handshakes (default: the machine serial)' },
    'cluster-id': { type: 'string', description: 'Cluster id bound into every handshake and frame', default: 'dbcluster' },
    'ping-interval': { type: 'string', description: 'Seconds between link pings; 3 missed = peer unavailable', default: '5' },
    'resume-window': { type: 'string', description: 'Seconds a request whose stage was lost waits for the ring to be rebuilt, then resumes (re-prefilled) or fails (default: 3 ping intervals)', valueHint: 'S' },
  },
  async run({ args }) {
    const port = Number(args.port)
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be 0..65535, got '${args.port}'`)
    let dir = args.model
    if (!dir) {
      const demo = await ensureDemoModel((line) => consola.start(`creating the demo model: ${line}`))
      dir = demo.dir
      consola.info(`${demo.created ? 'created' : 'using'} the synthetic demo model at ${dir} (random weights: its text is gibberish; pass --model DIR for a real one)`)
    }
    const { backend, reason } = selectBackend(parseBackendChoice(args.backend), { threads: args.threads ? positiveInt(args.threads, 'threads') : undefined })
    consola.info(reason)
    const maxBatch = positiveInt(args['max-batch'], 'max-batch')
    const maxLen = positiveInt(args['max-context'], 'max-context')
    let pipeline: Pipeline
    let stage: ModelStage
    let ring: HeadPipeline | null = null
    if (args.peers) {
      const peers = parsePeers(args.peers)
      const rank = Number(args.rank)
      if (!Number.isInteger(rank) || rank < 0 || rank >= peers.length) throw new UsageError(`--rank must be 0..${peers.length - 1}`)
      const config = readModelConfig(dir)
      const [lo, hi] = layerRanges(config.numLayers, peers.length, args.split)[rank]!
      stage = ModelStage.load(dir, backend, { lo, hi, slots: maxBatch, maxLen })
      const { identity } = loadLocalIdentity()
      const link = {
        identity,
        serial: args['node-name'] ?? machineSerial(),
        clusterId: args['cluster-id'],
        authorize: authorizeByPins(new FilePinStore(defaultPinFile())),
        pingIntervalMs: Number(args['ping-interval']) * 1000,
        backoffMs: Math.max(500, Number(args['ping-interval']) * 1000),
      }
      consola.info(`rank ${rank} of ${peers.length}: layers [${lo}, ${hi}) of ${config.numLayers}; link ${peers[rank]!.host}:${peers[rank]!.port}`)
      if (rank > 0) {
        new StageNode({ rank, peers, stage, link })
        console.log(`stage ${rank} ready`)
        await new Promise<void>((done) => {
          process.once('SIGINT', () => done())
          process.once('SIGTERM', () => done())
        })
        return
      }
      ring = new HeadPipeline({ rank, peers, stage, link })
      pipeline = ring
    } else {
      stage = ModelStage.load(dir, backend, { slots: maxBatch, maxLen })
      pipeline = new LocalPipeline([stage])
    }
    const tokenizer = new ModelTokenizer(dir, stage.config.eosTokenIds)
    const metrics = new ServingMetrics()
    const scheduler = new Scheduler(
      pipeline,
      (ids) => tokenizer.decode(ids),
      {
        maxBatch,
        maxQueue: positiveInt(args['max-queue'], 'max-queue'),
        prefillChunk: positiveInt(args['prefill-chunk'], 'prefill-chunk'),
        requestTimeoutMs: positiveInt(args['request-timeout'], 'request-timeout') * 1000,
        // with N stages, N micro-batches in flight keep every stage busy at once
        microBatches: args.peers ? parsePeers(args.peers).length : 1,
        resumeWindowMs: 1000 * (args['resume-window'] !== undefined ? nonNegative(args['resume-window'], 'resume-window') : 3 * Number(args['ping-interval'])),
      },
      metrics,
    )
    if (ring) {
      scheduler.setDegraded(ring.degraded)
      ring.onDegraded((reason) => {
        scheduler.setDegraded(reason)
        if (reason) metrics.linkErrors.inc({ reason: reason.split(':')[0] ?? 'link' })
      })
    }
    const modelId = args['model-id'] ?? basename(resolve(dir))
    const app = createApp({
      scheduler,
      tokenizer,
      modelId,
      metrics,
      apiKey: args['api-key'] ?? process.env.DBCLUSTER_API_KEY,
      health: () => ({
        backend: backend.name,
        nodes: args.peers ? parsePeers(args.peers).length : 1,
        layers: stage.config.numLayers,
        head_layers: [stage.range.lo, stage.range.hi],
        kv_slots_free: stage.cache.freeSlots,
        ...(ring ? { ring: ring.status() } : {}),
      }),
    })
    const server = Bun.serve({ hostname: args.host, port, fetch: app.fetch, idleTimeout: 0 })
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
