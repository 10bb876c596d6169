/** `dbcluster serve`: the OpenAI-compatible API over this machine's model (the demo model when none is given), alone,
 * as the head or a stage of a pipeline cluster, or as a rank of a tensor-parallel group (src/node/ puts the node
 * together; this command parses flags and serves). */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { serveApi } from '../api/serve-api.ts'
import { authorizeByPinsOrCoordinator } from '../coordinator/node-registration.ts'
import { ServingMetrics } from '../engine/metrics.ts'
import { stepBudget } from '../engine/scheduler.ts'
import { UsageError } from '../errors.ts'
import { portNumber, positiveInt } from './number-list.ts'
import { clusterMembership, coordinatorSession } from '../node/cluster-membership.ts'
import { modelFolder } from '../node/model-folder.ts'
import { startNode } from '../node/start-node.ts'
import { parseBackendChoice, parsePrecision, selectBackend } from '../tensor/select-backend.ts'
import { defaultPinFile, loadLocalIdentity } from '../trust/local-identity.ts'
import { openLocalPinStore } from '../trust/local-pin-store.ts'
import { machineSerial } from '../trust/machine-info.ts'
import { readMdaChain } from '../trust/mda.ts'
import { authorizeByPins } from '../trust/pinned-keys.ts'
import { progressPrinter } from './model-pull.ts'
import { hopSealing, nodeMemory, peersFromSetup, reconnectBackoffMs, SERVE_ARGS } from './serve-args.ts'

const nonNegative = (value: string, name: string): number => {
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number of seconds >= 0, got '${value}'`)
  return n
}

export default defineCommand({
  meta: {
    name: 'serve',
    description: 'Serve a model with an OpenAI-compatible API (chat and text completions, streaming, metrics)',
  },
  args: SERVE_ARGS,
  async run({ args, rawArgs }) {
    Object.assign(args, peersFromSetup(args, rawArgs)) // --peers without a list, or left out: `cluster setup`'s cluster
    const port = Number(args.port)
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new UsageError(`--port must be 0..65535, got '${args.port}'`)
    // the API's flags are checked before anything loads
    const idleTimeoutSeconds = positiveInt(args['idle-timeout'], 'idle-timeout')
    if (idleTimeoutSeconds > 255)
      throw new UsageError(`--idle-timeout must be 1..255 seconds, got '${args['idle-timeout']}'`)
    const resumeS =
      args['resume-window'] !== undefined
        ? nonNegative(args['resume-window'], 'resume-window')
        : 3 * Number(args['ping-interval'])
    const api = {
      host: args.host,
      port,
      modelId: args['model-id'],
      apiKey: args['api-key'] ?? process.env.DBCLUSTER_API_KEY,
      publicHealth: args['public-health'] === true,
      idleTimeoutSeconds,
      maxPerClient: positiveInt(args['max-requests-per-client'], 'max-requests-per-client'),
      scheduling: {
        maxBatch: positiveInt(args['max-batch'], 'max-batch'),
        maxQueue: positiveInt(args['max-queue'], 'max-queue'),
        prefillChunk: positiveInt(args['prefill-chunk'], 'prefill-chunk'),
        maxStepTokens: args['max-step-tokens'] ? positiveInt(args['max-step-tokens'], 'max-step-tokens') : undefined,
        requestTimeoutMs: positiveInt(args['request-timeout'], 'request-timeout') * 1000,
        resumeWindowMs: 1000 * resumeS,
      },
    }
    stepBudget(api.scheduling) // refused before any model loads
    const tpSize = positiveInt(args.tp, 'tp')
    const clustered = Boolean(args.peers || args.discover || tpSize > 1)
    if (args.rdma && !args.coordinator)
      throw new UsageError('--rdma registers this node with the coordinator: give --coordinator too')
    if (args['mda-chain'] && !args.coordinator)
      throw new UsageError('--mda-chain is evidence for the coordinator: give --coordinator too')
    if (args.coordinator && !clustered)
      throw new UsageError('--coordinator is for cluster nodes (with --peers, --discover or --tp)')
    const serial = args['node-name'] ?? machineSerial()
    const pins = openLocalPinStore(defaultPinFile()).store
    const choice = parseBackendChoice(args.backend)
    const transport = args['tp-transport'] === 'auto' ? 'sealed' : args['tp-transport']
    if (transport !== 'sealed' && transport !== 'jaccl' && transport !== 'ring')
      throw new UsageError(`unknown --tp-transport '${transport}'`, 'use auto, sealed, jaccl or ring')
    // a node alone (or an MLX rank, unsealed) needs no identity key; a node that meets others over sealed links does
    const sealedLinks = Boolean(
      args.coordinator || args.peers || args.discover || (tpSize > 1 && transport === 'sealed'),
    )
    const identity = sealedLinks ? loadLocalIdentity().identity : undefined
    const coordinator = args.coordinator
      ? await coordinatorSession(
          args.coordinator,
          args['coordinator-token'] ?? process.env.DBCLUSTER_COORDINATOR_TOKEN,
          identity!,
          serial,
          pins,
          {
            requestRdma: args.rdma === true,
            mdaChain: args['mda-chain'] ? readMdaChain(args['mda-chain']) : undefined,
          },
        )
      : undefined
    const discover = args.discover
      ? {
          nodes: positiveInt(args.nodes, 'nodes'),
          iface: args.iface,
          linkPort: portNumber(args['link-port'], 'link-port'),
        }
      : undefined
    const membership =
      args.peers || discover
        ? await clusterMembership(
            { peers: args.peers, rank: Number(args.rank), discover },
            identity!,
            serial,
            pins,
            coordinator,
          )
        : null
    if (tpSize > 1 && membership)
      throw new UsageError(
        '--tp cannot be combined with a pipeline cluster (--peers / --discover) yet',
        'run tensor parallel alone, or pipeline parallel alone',
      )
    const isStage = membership !== null && membership.rank > 0
    // activations leave this machine sealed unless the user opted into MLX's unencrypted transports by name
    const overMlx = tpSize > 1 && transport !== 'sealed'
    if (overMlx && choice === 'cpu')
      throw new UsageError(
        `--tp-transport ${transport} runs over MLX distributed and needs the mlx backend`,
        'use --backend mlx (or auto), or --tp-transport sealed',
      )
    const modelDir = args.model && !isStage ? await pulledModel(args.model) : args.model
    const { backend, reason } = selectBackend(overMlx ? 'mlx' : choice, {
      threads: args.threads ? positiveInt(args.threads, 'threads') : undefined,
      precision: parsePrecision(args.precision),
    })
    consola.info(reason)
    const metrics = new ServingMetrics()
    const authorize = coordinator ? authorizeByPinsOrCoordinator(pins, coordinator) : authorizeByPins(pins)
    const pingIntervalMs = Number(args['ping-interval']) * 1000
    // a stage ends on SIGINT / SIGTERM; a serving node finishes its requests first (below)
    const stop = new AbortController()
    if (isStage) for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => stop.abort())
    const tpRank = Number(args['tp-rank'])
    if (tpSize > 1 && !(Number.isInteger(tpRank) && tpRank >= 0 && tpRank < tpSize))
      throw new UsageError(`--tp-rank must be 0..${tpSize - 1}, got '${args['tp-rank']}'`)
    const started = await startNode({
      modelDir,
      modelSpec: args.model,
      serial,
      backend,
      maxBatch: api.scheduling.maxBatch,
      maxLen: positiveInt(args['max-context'], 'max-context'),
      ...nodeMemory(args),
      plan: args.plan === true,
      membership,
      coordinator,
      split: args.split,
      link:
        identity && membership
          ? {
              identity,
              serial,
              ...hopSealing(args),
              authorize,
              pingIntervalMs,
              backoffMs: reconnectBackoffMs(pingIntervalMs),
              orphanTimeoutMs: 1000 * nonNegative(args['orphan-timeout'], 'orphan-timeout'),
            }
          : undefined,
      tensorParallel:
        tpSize > 1
          ? {
              size: tpSize,
              rank: tpRank,
              transport,
              listen: args['tp-listen'],
              peer: args['tp-peer'],
              rdmaDevice: args['rdma-device'],
              timeoutMs: positiveInt(args['tp-timeout'], 'tp-timeout') * 1000,
              identity: identity!,
              authorize,
              ...hopSealing(args),
            }
          : null,
      metrics,
      signal: stop.signal,
    })
    if (started.role === 'finished') return
    await serveApi(started.node, { ...api, metrics, backendName: backend.name })
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
