/** The `stop` control frame (docs/cluster.md §Stopping): the head → a stage, on its control link, once the head has
 * drained (or cut) its requests — finish and exit. Sealed header: stage 0 (the head), request id 0. Payload:
 * `u32 now (0|1) | u32 length | UTF-8 reason`. The stage answers by closing the control link when it has stopped. */
import { Reader, Writer } from './binary-codec.ts'

export interface StopMessage {
  /** The head cut its running requests (`cluster stop --now`) instead of letting them finish. */
  now: boolean
  /** Why, for the stage's log line (e.g. "dbcluster cluster stop"). */
  reason: string
}

export function encodeStop(m: StopMessage): Uint8Array {
  const w = new Writer()
  w.u32(m.now ? 1 : 0)
  w.utf8(m.reason)
  return w.join()
}

export function decodeStop(bytes: Uint8Array): StopMessage {
  const r = new Reader(bytes, 'stop message')
  const now = r.u32()
  const reason = r.utf8()
  r.end()
  if (now > 1) throw new RangeError(`stop message has now = ${now}`)
  return { now: now === 1, reason }
}
