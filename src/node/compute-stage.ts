/** A node's own layers on a compute thread (compute/stage-thread.ts) with the backend the command chose, and how a hung
 * compute thread reaches /health and the scheduler: new requests get 503 naming it, not a dead peer. */
import { StageThread } from '../compute/stage-thread.ts'
import type { Scheduler } from '../engine/scheduler.ts'
import type { Backend } from '../tensor/backend.ts'

export function startComputeStage(
  backend: Backend,
  dir: string,
  stage: { lo?: number; hi?: number; slots: number; maxLen: number },
): Promise<StageThread> {
  const { name, threads, precision } = backend
  return StageThread.start({ dir, backend: { name, threads, precision }, ...stage })
}

/** /health's field for the compute thread. */
export const computeHealth = (thread: StageThread) =>
  thread.hung ? { state: 'hung', reason: thread.hung } : { state: 'ok' }

/** While the thread is hung the node is degraded (running requests already failed with E_COMPUTE_HUNG); should it
 * answer again, the node is as `otherwise` says (the ring's state on a head, nothing on a node alone). */
export function degradeWhileHung(
  thread: StageThread,
  scheduler: Scheduler,
  otherwise: () => string | null = () => null,
) {
  thread.onHung((reason) =>
    scheduler.setDegraded(reason ? `compute thread hung: ${reason}` : otherwise(), { recoverable: !reason }),
  )
}
