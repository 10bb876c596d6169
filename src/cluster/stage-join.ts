/** A stage's side of joining (docs/cluster.md §Joining): dial the head's port on a control link, say how much memory this
 * node offers, and wait for the plan — the layer range to load and the KV geometry. Keeps trying while the head is not
 * up yet (or only printed a plan); a refusal (the plan does not fit, a bad --split, a wrong rank) ends with its reason. */
import { consola } from 'consola'
import { freemem } from 'node:os'
import { DbcError } from '../errors.ts'
import { FrameType } from '../link/frames.ts'
import { connectLink, type LinkOptions, type SealedLink } from '../link/tcp-link.ts'
import { expectSender, FrameMismatch, HEAD_RANK } from './frame-header.ts'
import { decodePlan, encodeJoin, type JoinMessage, type PlanMessage } from './join-messages.ts'
import { announceRole } from './role-listener.ts'
import type { RingAddress } from './ring.ts'

const log = consola.withTag('cluster')

/** The head answers this code when it only printed the plan (`serve --plan`): stages wait for the real head. */
export const PLAN_ONLY = 'E_PLAN_ONLY'

export type StagePlan = Extract<PlanMessage, { ok: true }>

export interface StageJoinOptions {
  head: RingAddress
  /** What to say; the clock and free memory are read at each attempt. */
  join: Omit<JoinMessage, 'clockMs' | 'freeBytes' | 'attestation'>
  /** Signs this node's attestation (JSON) afresh for each attempt, for the head to relay to its coordinator. */
  attest?: () => Promise<string>
  link: LinkOptions
  /** Longest wait between attempts while the head is away, in ms (the first ones come sooner). */
  retryMs: number
  /** Stops trying (the process is shutting down). */
  signal?: AbortSignal
}

export class JoinRefused extends DbcError {}

/** The control link and this stage's plan, once the head has answered. */
export async function joinHead(o: StageJoinOptions): Promise<{ link: SealedLink; plan: StagePlan }> {
  let lastReason = ''
  for (let attempt = 0; ; attempt++) {
    if (o.signal?.aborted) throw new DbcError('E_ABORTED', 'stopped before the head answered')
    let link: SealedLink | null = null
    try {
      link = await connectLink(o.head.host, o.head.port, o.link)
      announceRole(link, 'control', o.join.rank)
      const attestation = o.attest ? await o.attest() : ''
      link.send(FrameType.join, encodeJoin({ ...o.join, clockMs: Date.now(), freeBytes: freemem(), attestation }), {
        stage: o.join.rank,
      })
      const f = await link.nextFrame((f) => f.type === FrameType.plan)
      expectSender(f, HEAD_RANK, 'the head')
      const plan = decodePlan(f.payload)
      if (plan.ok) return { link, plan }
      link.close()
      if (plan.code !== PLAN_ONLY)
        throw new JoinRefused(
          plan.code,
          `the head refused this node: ${plan.message}`,
          'fix the cause on the head (see its output) and start this node again',
        )
      log.info(`the head printed the plan and stopped (--plan); waiting for it to start for real`)
    } catch (error) {
      if (error instanceof JoinRefused) throw error
      // a frame this side refused: the head is told why (a closed link or a failed dial has nothing to tell)
      link?.close(error instanceof FrameMismatch ? error : null)
      const reason = (error as Error).message
      if (reason !== lastReason) log.info(`waiting for the head at ${o.head.host}:${o.head.port}: ${reason}`)
      lastReason = reason
    }
    // nodes are usually started together: try again soon at first, then every retryMs
    await Bun.sleep(Math.min(o.retryMs, 100 * 2 ** attempt))
  }
}
