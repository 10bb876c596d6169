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
import { ModelStage } from '../model/shard.ts'
import { ModelTokenizer } from '../model/tokenizer.ts'
import { parseBackendChoice, selectBackend } from '../tensor/select-backend.ts'

const positiveInt = (value: string, name: string): number => {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${value}'`)
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
    const stage = ModelStage.load(dir, backend, { slots: maxBatch, maxLen: positiveInt(args['max-context'], 'max-context') })
    const tokenizer = new ModelTokenizer(dir, stage.config.eosTokenIds)
    const metrics = new ServingMetrics()
    const scheduler = new Scheduler(
      new LocalPipeline([stage]),
      (ids) => tokenizer.decode(ids),
      {
        maxBatch,
        maxQueue: positiveInt(args['max-queue'], 'max-queue'),
        prefillChunk: positiveInt(args['prefill-chunk'], 'prefill-chunk'),
        requestTimeoutMs: positiveInt(args['request-timeout'], 'request-timeout') * 1000,
      },
      metrics,
    )
    const modelId = args['model-id'] ?? basename(resolve(dir))
    const app = createApp({
      scheduler,
      tokenizer,
      modelId,
      metrics,
      apiKey: args['api-key'] ?? process.env.DBCLUSTER_API_KEY,
      health: () => ({ backend: backend.name, nodes: 1, layers: stage.config.numLayers, kv_slots_free: stage.cache.freeSlots }),
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
