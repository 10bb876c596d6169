/** `dbcluster cluster logs` on the control link (docs/protocol.md §Control frames): the head asks a stage for its log
 * lines after a sequence number (`logsRequest`: u32 after | u32 limit), the stage answers under the same request id
 * (`logs`: UTF-8 JSON {lines: [{seq, at, stream, text}], next}). The head gathers them with its own for GET /admin/logs. */
import { Reader, Writer } from './binary-codec.ts'
import { FrameType } from '../link/frames.ts'
import type { LinkFrame, SealedLink } from '../link/tcp-link.ts'
import { processLog, type LogLine } from '../log-ring.ts'

export interface LogsRequest {
  after: number
  limit: number
}

/** One node's lines as GET /admin/logs gives them: from its ring, or why they could not be read. */
export interface NodeLogs {
  rank: number
  node: string
  lines: LogLine[]
  /** Ask from here next time (the node's last sequence number). */
  next: number
  error?: string
}

export function encodeLogsRequest(m: LogsRequest): Uint8Array {
  const w = new Writer()
  w.u32(m.after)
  w.u32(m.limit)
  return w.join()
}

export function decodeLogsRequest(bytes: Uint8Array): LogsRequest {
  const r = new Reader(bytes, 'logs request')
  const m = { after: r.u32(), limit: r.u32() }
  r.end()
  return m
}

/** This process's own lines as one node's entry. */
export function ownLogs(rank: number, node: string, after: ReadonlyMap<number, number>, limit: number): NodeLogs {
  return { rank, node, ...processLog.since(after.get(rank) ?? 0, limit) }
}

/** A stage's answer to the head's logsRequest frame, from this process's ring. */
export function answerLogs(f: LinkFrame, link: SealedLink): void {
  const { after, limit } = decodeLogsRequest(f.payload)
  const body = new TextEncoder().encode(JSON.stringify(processLog.since(after, limit)))
  link.send(FrameType.logs, body, { stage: f.stage, requestId: f.requestId })
}

let nextRequest = 1n

/** The head asks one stage over its control link; a stage that does not answer in `timeoutMs` gives an error entry. */
export async function askLogs(
  link: SealedLink,
  who: { rank: number; node: string },
  request: LogsRequest,
  timeoutMs: number,
): Promise<NodeLogs> {
  const requestId = nextRequest++
  try {
    // listening before asking: a link hands a frame only to a listener already waiting
    const answer = link.nextFrame((f) => f.type === FrameType.logs && f.requestId === requestId, timeoutMs)
    link.send(FrameType.logsRequest, encodeLogsRequest(request), { stage: 0, requestId })
    const { lines, next } = JSON.parse(new TextDecoder().decode((await answer).payload)) as {
      lines: LogLine[]
      next: number
    }
    return { ...who, lines, next }
  } catch (error) {
    return { ...who, lines: [], next: request.after, error: (error as Error).message }
  }
}
