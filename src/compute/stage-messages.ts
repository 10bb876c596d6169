/** The messages between a node's event loop and its compute thread (stage-thread.ts ↔ stage-worker.ts). Typed arrays
 * a step returns travel by transfer, not copy (its inputs are copied: the caller keeps using them); errors travel as their code, message and hint and become DbcErrors again. */
import { DbcError } from '../errors.ts'
import type { RowSampling } from '../model/sampler.ts'
import type { StageInput } from '../model/shard.ts'
import type { StageRun } from '../model/stage-runner.ts'
import type { Precision } from '../tensor/backend.ts'

export interface StageLoad {
  dir: string
  backend: { name: 'cpu' | 'mlx'; threads?: number; precision?: Precision }
  lo?: number
  hi?: number
  slots: number
  maxLen: number
}

/** What the event loop asks. Requests with an `id` are answered once, in the order they were sent. */
export type ToCompute =
  | { op: 'load'; id: number; load: StageLoad }
  | { op: 'run'; id: number; input: StageInput; sampling?: readonly RowSampling[] }
  | { op: 'claim' | 'release'; slot: number }
  | { op: 'releaseAll' }
  | { op: 'prefix-open'; id: number; capacityBytes: number; model: string }
  | { op: 'prefix-restore'; id: number; slot: number; ids: readonly number[]; tenant: string }
  | { op: 'prefix-store'; id: number; slot: number; ids: readonly number[]; upTo: number; tenant: string }
  | { op: 'prefix-finish'; slot: number }
  /** Test hook: the compute thread spins for `ms` before its next step (a stuck kernel, as the event loop sees it). */
  | { op: 'stall'; ms: number }
  | { op: 'close'; id: number }

/** What the stage reports once loaded: what the node plans and reports with, without the weights. */
export interface LoadedStage {
  range: { lo: number; hi: number; first: boolean; last: boolean }
  weightBytes: number
  kvBytes: number
  kvDtype: 'f32' | 'f16'
  /** Why this stage's KV cannot be reused by prefix (null: it can). */
  blockReuseRefusal: string | null
}

/** The prefix cache's counters moved since the last answer, and its size now (engine/metrics.ts families). */
export interface PrefixTally {
  hitTokens: number
  queryTokens: number
  evictions: number
  blocks: number
  bytes: number
}

export type FromCompute =
  | { id: number; ok: true; loaded: LoadedStage }
  | { id: number; ok: true; run: StageRun }
  | { id: number; ok: true; value: number | null; tally?: PrefixTally }
  | { id: number; ok: false; error: WireError }
  /** Something failed that no request waits on (a slot claim out of step): logged by the event loop. */
  | { fault: string }

export interface WireError {
  code: string
  message: string
  hint?: string
}

export function toWire(error: unknown): WireError {
  if (error instanceof DbcError) return { code: error.code, message: error.message, hint: error.hint }
  return { code: 'E_COMPUTE', message: (error as Error)?.message ?? String(error) }
}

export const fromWire = (e: WireError): DbcError => new DbcError(e.code, e.message, e.hint)

/** The buffers of a step's results, handed over rather than copied (each is a new array the stage made for this step). */
export function transferablesOf(value: StageRun): ArrayBuffer[] {
  const buffers: ArrayBuffer[] = []
  for (const v of Object.values(value)) {
    if (ArrayBuffer.isView(v) && v.buffer instanceof ArrayBuffer && !buffers.includes(v.buffer)) buffers.push(v.buffer)
  }
  return buffers
}
