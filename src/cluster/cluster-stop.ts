/** Stopping a serving node and its cluster on request (docs/cluster.md §Stopping; `dbcluster cluster stop` → POST
 * /admin/stop on the head): nothing new is admitted, the running requests finish (for at most the drain timeout; `now`
 * skips the drain and ends them with E_CLUSTER_STOPPED), every stage is told to stop over its control link, and then
 * the head ends the way SIGTERM ends it. A process serves one node: the node registers how to halt its work and stop
 * its members (`nodeStop.register`), and the API asks for the stop (`nodeStop.request`). */
import { consola } from 'consola'
import { DbcError } from '../errors.ts'

const log = consola.withTag('cluster')

export interface StopRequest {
  /** Skip the drain: running requests end at once with E_CLUSTER_STOPPED. */
  now: boolean
  /** How long running requests may take to finish before they are cut. */
  drainMs: number
}

/** What a stop needs of the scheduler (engine/scheduler's Scheduler is one). */
export interface DrainingScheduler {
  /** No new requests (503 E_CLOSED); queued ones end with that error; running ones go on. */
  close(): void
  readonly running: number
  setDegraded(reason: string | null, options?: { recoverable?: boolean }): void
}

/** What the serving node does for a stop (a pipeline head: fail its ring's steps, tell its stages). */
export interface StopHooks {
  /** Ends every running request with `error`. */
  halt(error: DbcError): void
  /** Tells every other member to stop and waits (bounded) until they have. */
  stopMembers(request: StopRequest): Promise<void>
}

/** For /health while a stop is under way. */
export interface StopStatus {
  now: boolean
  drain_timeout_s: number
  since_ms_ago: number
}

/** After a halt, how long the failed requests get to send their error events before the members stop. */
const HALT_SETTLE_MS = 3000

export class NodeStop {
  #hooks: StopHooks | null = null
  #stop: { request: StopRequest; since: number; cut: () => void } | null = null

  constructor(private readonly exit: () => void = () => process.kill(process.pid, 'SIGTERM')) {}

  /** The serving node's part; without one (a node alone) running requests are failed through the scheduler. */
  register(hooks: StopHooks): void {
    this.#hooks = hooks
  }

  get status(): StopStatus | null {
    const s = this.#stop
    return s
      ? { now: s.request.now, drain_timeout_s: s.request.drainMs / 1000, since_ms_ago: Date.now() - s.since }
      : null
  }

  /** Starts the stop and returns at once (false: one was already under way; a `now` request cuts its drain). */
  request(scheduler: DrainingScheduler, request: StopRequest): boolean {
    if (this.#stop) {
      if (request.now && !this.#stop.request.now) {
        this.#stop.request.now = true
        this.#stop.cut()
      }
      return false
    }
    let cut!: () => void
    const cutting = new Promise<void>((resolve) => (cut = resolve))
    this.#stop = { request: { ...request }, since: Date.now(), cut }
    void this.#run(scheduler, this.#stop.request, cutting).catch((error) => {
      log.error(`the stop did not finish cleanly: ${(error as Error).message}; ending anyway`)
      this.exit()
    })
    return true
  }

  async #run(scheduler: DrainingScheduler, request: StopRequest, cutting: Promise<void>): Promise<void> {
    scheduler.close()
    const drainS = Math.round(request.drainMs / 1000)
    if (!request.now && scheduler.running > 0) {
      log.info(`stopping: no new requests; ${scheduler.running} running may take up to ${drainS} s to finish`)
      await Promise.race([until(() => scheduler.running === 0, request.drainMs), cutting])
    }
    if (scheduler.running > 0) {
      const running = scheduler.running
      const error = request.now
        ? new DbcError(
            'E_CLUSTER_STOPPED',
            'the cluster was stopped at once (dbcluster cluster stop --now) before this request finished',
            'send it again once the cluster serves again',
          )
        : new DbcError(
            'E_CLUSTER_STOPPED',
            `the cluster stopped: this request did not finish within the ${drainS} s drain of dbcluster cluster stop`,
            'send it again once the cluster serves again',
          )
      log.warn(`stopping: ending ${running} running request(s) (${request.now ? '--now' : 'drain timeout'})`)
      if (this.#hooks) this.#hooks.halt(error)
      else scheduler.setDegraded(error.message, { recoverable: false })
      await until(() => scheduler.running === 0, HALT_SETTLE_MS)
      // requests suspended for a lost stage take no step, so no halt reaches them: the scheduler ends them itself
      if (scheduler.running > 0) scheduler.setDegraded(error.message, { recoverable: false })
    }
    if (this.#hooks) await this.#hooks.stopMembers(request)
    log.info('stopped: this node ends now')
    this.exit()
  }
}

/** Resolves once `done()` holds or after `ms`, whichever is first (checked every 50 ms). */
async function until(done: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (!done() && Date.now() < deadline) await Bun.sleep(Math.min(50, Math.max(1, deadline - Date.now())))
}

/** This process's node (a process serves one). */
export const nodeStop = new NodeStop()
