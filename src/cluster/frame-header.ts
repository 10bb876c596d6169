/** What the sealed header of a cluster frame must say (docs/protocol.md §Sealed frames, "On cluster links"): its stage is
 * the sender's rank, and a ring frame's request id is the step id its message carries. The AEAD proves the header was
 * not changed on the way; these checks prove the sender put the values there that its place in the ring implies, so a
 * frame moved to another hop or another step is refused by name instead of being caught by luck. */
import { LinkError } from '../link/errors.ts'
import { frameTypeName } from '../link/frames.ts'
import type { LinkFrame } from '../link/tcp-link.ts'

/** The head plans the cluster and sends every control answer: its rank is the stage of those frames. */
export const HEAD_RANK = 0

/** A frame whose header disagrees with where it came from or what it carries; closing the link with it fails the step. */
export class FrameMismatch extends LinkError {
  constructor(message: string) {
    super('E_FRAME_MISMATCH', message, 'the link was closed; the step in flight failed')
  }
}

/** The refusal of a frame whose header's stage is not `rank` (`who` says why that rank, e.g. "predecessor"), or null. */
export function senderMismatch(f: Pick<LinkFrame, 'type' | 'stage'>, rank: number, who: string): FrameMismatch | null {
  return f.stage === rank
    ? null
    : new FrameMismatch(`${frameTypeName(f.type)} frame says stage ${f.stage}, expected ${rank} (${who})`)
}

/** Throws senderMismatch's refusal, if there is one. */
export function expectSender(f: Pick<LinkFrame, 'type' | 'stage'>, rank: number, who: string): void {
  const mismatch = senderMismatch(f, rank, who)
  if (mismatch) throw mismatch
}

/** Throws FrameMismatch unless the header's request id is the step id inside the decoded message. */
export function expectStep(f: Pick<LinkFrame, 'type' | 'requestId'>, stepId: number): void {
  if (f.requestId !== BigInt(stepId))
    throw new FrameMismatch(
      `${frameTypeName(f.type)} frame says request ${f.requestId}, expected ${stepId} (the step id it carries)`,
    )
}
