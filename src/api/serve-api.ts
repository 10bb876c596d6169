/** The API of a serving node, from the scheduler to the socket: continuous batching over the node's pipeline, the
 * OpenAI routes, the HTTP server and its limits, and a clean finish on SIGINT / SIGTERM (no new requests, then exit). */
import { consola } from 'consola'
import { basename, resolve } from 'node:path'
import { ConstraintCompiler, grammarVocabulary } from '../engine/constraint.ts'
import type { ServingMetrics } from '../engine/metrics.ts'
import { Scheduler, type SchedulerOptions } from '../engine/scheduler.ts'
import type { Pipeline } from '../model/pipeline.ts'
import { ModelTokenizer } from '../model/tokenizer.ts'
import type { LogsSource } from './admin-logs.ts'
import { createApp } from './app.ts'
import { generatedTokens } from './dashboard-snapshot.ts'
import { openFileDescriptors, serveHttp } from './http-server.ts'
import { ThroughputHistory } from './throughput-history.ts'

/** What the API needs of a node (src/node's ServingNode is one). */
export interface ServedNode {
  modelDir: string
  pipeline: Pipeline
  stage: { config: { eosTokenIds: number[] } }
  microBatches: number
  health(): Record<string, unknown>
  logs: LogsSource
  connect(scheduler: Scheduler): void
}

export interface ApiOptions {
  host: string
  port: number
  /** The name /v1/models reports (default: the model folder's name). */
  modelId?: string
  apiKey?: string
  publicHealth: boolean
  idleTimeoutSeconds: number
  maxPerClient: number
  scheduling: Omit<SchedulerOptions, 'microBatches' | 'maxResumes'>
  metrics: ServingMetrics
  backendName: string
}

/** Serves until SIGINT / SIGTERM, then lets the running requests finish. */
export async function serveApi(node: ServedNode, o: ApiOptions): Promise<void> {
  const { metrics } = o
  const tokenizer = new ModelTokenizer(node.modelDir, node.stage.config.eosTokenIds)
  const scheduler = new Scheduler(
    node.pipeline,
    (ids) => tokenizer.decode(ids),
    { ...o.scheduling, microBatches: node.microBatches },
    metrics,
  )
  node.connect(scheduler)
  scheduler.constraints = new ConstraintCompiler(() =>
    grammarVocabulary(node.modelDir, node.pipeline.vocabSize, tokenizer.eosTokenIds),
  )
  const modelId = o.modelId ?? basename(resolve(node.modelDir))
  // the dashboard's throughput chart: sampled whether or not a dashboard is open
  const throughput = new ThroughputHistory()
  const sampler = setInterval(() => throughput.observe(Date.now(), generatedTokens(metrics)), throughput.intervalMs)
  const app = createApp({
    scheduler,
    tokenizer,
    modelId,
    metrics,
    health: () => node.health(),
    logs: node.logs,
    apiKey: o.apiKey,
    publicHealth: o.publicHealth,
    throughput,
  })
  const http = serveHttp(app, {
    hostname: o.host,
    port: o.port,
    idleTimeoutSeconds: o.idleTimeoutSeconds,
    maxPerClient: o.maxPerClient,
    metrics,
  })
  metrics.sample = () => {
    const open = http.open()
    metrics.httpOpenRequests.set(open.requests)
    metrics.httpOpenClients.set(open.clients)
    const fds = openFileDescriptors()
    if (fds !== null) metrics.openFds.set(fds)
  }
  const { server } = http
  const at = `http://${server.hostname}:${server.port}`
  consola.success(`serving ${modelId} on ${at}/v1 (${o.backendName} backend, batch ${scheduler.options.maxBatch})`)
  console.log(`listening on ${at}`)
  await new Promise<void>((done) => {
    const finish = (signal: string) => {
      consola.info(`${signal}: finishing — no new requests`)
      scheduler.close()
      clearInterval(sampler)
      void server.stop(false).then(() => done())
    }
    process.once('SIGINT', () => finish('SIGINT'))
    process.once('SIGTERM', () => finish('SIGTERM'))
  })
}
