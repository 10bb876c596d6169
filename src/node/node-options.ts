/** What a node is asked to be, already parsed and checked (the command turns its flags into this), and what a started
 * node gives the server: its pipeline, its part of /health, and how its failures reach the scheduler. */
import type { RingAddress } from '../cluster/ring.ts'
import type { NodeLogs } from '../cluster/log-messages.ts'
import type { ServingMetrics } from '../engine/metrics.ts'
import type { Pipeline } from '../model/pipeline.ts'
import type { Scheduler } from '../engine/scheduler.ts'
import type { CipherName } from '../link/aead-channel.ts'
import type { CoordinatorClient } from '../coordinator/client.ts'
import type { LinkOptions } from '../link/tcp-link.ts'
import type { StageRunner } from '../model/stage-runner.ts'
import type { Backend } from '../tensor/backend.ts'
import type { Identity } from '../trust/identity.ts'
import type { Authorizer } from '../trust/pinned-keys.ts'

export interface NodeOptions {
  /** The model folder (the head's, a single node's, each tensor-parallel rank's); optional on a pipeline stage. */
  modelDir?: string
  /** --model as the user gave it (a folder or ORG/NAME): stages store received files under its name. */
  modelSpec?: string
  serial: string
  backend: Backend
  maxBatch: number
  maxLen: number
  /** Memory this node offers the model (weights + KV). */
  usableBytes: number
  /** Bytes for the prefix cache's blocks (engine/prefix-cache.ts): 'auto' for half of what is left of usableBytes after
   * weights and KV slots; 0 or absent: none. Only a node alone keeps one so far. */
  prefixCache?: number | 'auto'
  /** Print the plan and stop. */
  plan: boolean
  /** A pipeline cluster: every node's link address in rank order, and this node's rank. */
  membership: { peers: RingAddress[]; rank: number } | null
  /** --split: layers per node, decided by the head. */
  split?: string
  /** The sealed link's settings for a pipeline cluster (identity, who may join); on a stage, how long its head may be
   * gone before it exits (--orphan-timeout, ms; 0: for ever). */
  link?: LinkOptions & { backoffMs: number; orphanTimeoutMs?: number }
  /** With --coordinator: the head has the cluster vouched for by a signed roster, stages check it (cluster-roster.ts). */
  coordinator?: CoordinatorClient
  tensorParallel: TensorParallelRole | null
  metrics: ServingMetrics
  /** Ends a pipeline stage (SIGINT / SIGTERM). */
  signal: AbortSignal
}

export interface TensorParallelRole {
  size: number
  rank: number
  /** sealed: sockets sealed with `cipher` between pinned nodes; jaccl / ring: MLX distributed, not encrypted (auto:
   * jaccl where the RDMA gate passes, else ring). */
  transport: 'sealed' | 'auto' | 'jaccl' | 'ring'
  listen: string
  peer?: string
  rdmaDevice?: string
  timeoutMs: number
  /** For the sealed transport: this machine's key, who may be a rank, and the cluster id bound into its frames. */
  identity?: Identity
  authorize?: Authorizer
  clusterId?: string
  /** For the sealed transport: the AEAD of its meeting links and sockets (default AES-256-GCM), the same on every rank. */
  cipher?: CipherName
  /** Where the MLX transports' lines go (generate --json keeps stdout for its one object). */
  log?: (line: string) => void
}

/** A node that serves the API: the head of a pipeline, rank 0 of a tensor-parallel group, or a node alone. */
export interface ServingNode {
  /** The model folder it serves (its tokenizer and chat template). */
  modelDir: string
  pipeline: Pipeline
  /** Its own layers (on a compute thread, or in this thread under tensor parallelism). */
  stage: StageRunner
  /** Micro-batches in flight that keep every stage busy (the pipeline's depth). */
  microBatches: number
  /** This node's fields of /health. */
  health(): Record<string, unknown>
  /** Recent log lines of this node and of the members it reaches (`dbcluster cluster logs`): per rank, the lines after
   * `after.get(rank)` (0: all it keeps), at most `limit` of each. */
  logs(after: ReadonlyMap<number, number>, limit: number): Promise<NodeLogs[]>
  /** Reports the node's lost members and overdue steps to the scheduler, and heals what can heal. */
  connect(scheduler: Scheduler): void
  close(): void
}

/** What startNode gives back: a node to serve from, or nothing more to do (a stage or rank that finished, a plan). */
export type StartedNode = { role: 'serving'; node: ServingNode } | { role: 'finished'; followedSteps?: number }
