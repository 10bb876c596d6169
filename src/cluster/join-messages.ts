/** How a node joins the cluster (docs/cluster.md §Joining): every link a node dials starts with a `role` frame — ring
 * (the dialer is this node's predecessor) or control (a stage asking the head for its part). On a control link the stage
 * sends `join` (rank, the memory it can give the model, what it holds now) and the head answers `plan`: the stage's layer
 * range and the KV geometry every stage must share, or why there is no place for it. Binary, little-endian, never JSON. */
import { Reader, Writer } from './binary-codec.ts'

export const LinkRole = { ring: 1, control: 2 } as const
export type LinkRoleName = keyof typeof LinkRole

export interface RoleMessage {
  role: LinkRoleName
  rank: number
}

export interface JoinMessage {
  rank: number
  /** Bytes this node can give the model (weights + KV). */
  usableBytes: number
  /** The range this stage has loaded (a stage that keeps running while the head restarts), or null. */
  loaded: { lo: number; hi: number } | null
  backend: string
  /** Machine facts for `cluster status` and `doctor --cluster`: OS and chip, its clock (ms since the epoch) when it
   * sent this, and its free memory then. */
  osVersion: string
  chip: string
  clockMs: number
  freeBytes: number
  /** This node's fresh signed attestation as JSON (the head relays it when it registers the cluster with a
   * coordinator), or '' when it has none to give. */
  attestation: string
}

export type PlanMessage =
  | {
      ok: true
      lo: number
      hi: number
      numLayers: number
      nodes: number
      /** KV slots (sequences) and tokens per slot: the same on every stage, so a slot means the same everywhere. */
      slots: number
      maxLen: number
      /** The model's name on the head (the folder name a stage stores received files under). */
      model: string
      /** The coordinator-signed roster over the members, as JSON, when the head has a coordinator; else ''. A stage
       * with a coordinator checks it before loading anything (cluster-roster.ts). */
      roster: string
    }
  | { ok: false; code: string; message: string }

export function encodeRole(m: RoleMessage): Uint8Array {
  const w = new Writer()
  w.u32(LinkRole[m.role])
  w.u32(m.rank)
  return w.join()
}

export function decodeRole(bytes: Uint8Array): RoleMessage {
  const r = new Reader(bytes, 'role message')
  const code = r.u32()
  const rank = r.u32()
  r.end()
  const role = (Object.keys(LinkRole) as LinkRoleName[]).find((k) => LinkRole[k] === code)
  if (!role) throw new RangeError(`role message names unknown role ${code}`)
  return { role, rank }
}

export function encodeJoin(m: JoinMessage): Uint8Array {
  const w = new Writer()
  w.u32(m.rank)
  w.f64(m.usableBytes)
  w.u32(m.loaded ? 1 : 0)
  w.u32(m.loaded?.lo ?? 0)
  w.u32(m.loaded?.hi ?? 0)
  w.utf8(m.backend)
  w.utf8(m.osVersion)
  w.utf8(m.chip)
  w.f64(m.clockMs)
  w.f64(m.freeBytes)
  w.utf8(m.attestation)
  return w.join()
}

export function decodeJoin(bytes: Uint8Array): JoinMessage {
  const r = new Reader(bytes, 'join message')
  const rank = r.u32()
  const usableBytes = r.f64()
  const hasLoaded = r.u32()
  const lo = r.u32()
  const hi = r.u32()
  const backend = r.utf8()
  const osVersion = r.utf8()
  const chip = r.utf8()
  const clockMs = r.f64()
  const freeBytes = r.f64()
  const attestation = r.utf8()
  r.end()
  if (!(usableBytes > 0) || !Number.isFinite(usableBytes))
    throw new RangeError(`join message reports ${usableBytes} usable bytes`)
  if (hasLoaded > 1 || (hasLoaded && hi <= lo)) throw new RangeError('join message has a bad loaded range')
  if (!Number.isFinite(clockMs) || !(freeBytes >= 0))
    throw new RangeError('join message has a bad clock or free memory')
  return {
    rank,
    usableBytes,
    loaded: hasLoaded ? { lo, hi } : null,
    backend,
    osVersion,
    chip,
    clockMs,
    freeBytes,
    attestation,
  }
}

export function encodePlan(m: PlanMessage): Uint8Array {
  const w = new Writer()
  w.u32(m.ok ? 1 : 0)
  if (m.ok) {
    for (const v of [m.lo, m.hi, m.numLayers, m.nodes, m.slots, m.maxLen]) w.u32(v)
    w.utf8(m.model)
    w.utf8(m.roster)
  } else {
    w.utf8(m.code)
    w.utf8(m.message)
  }
  return w.join()
}

export function decodePlan(bytes: Uint8Array): PlanMessage {
  const r = new Reader(bytes, 'plan message')
  const ok = r.u32()
  if (ok === 0) {
    const m: PlanMessage = { ok: false, code: r.utf8(), message: r.utf8() }
    r.end()
    return m
  }
  if (ok !== 1) throw new RangeError(`plan message has status ${ok}`)
  const [lo, hi, numLayers, nodes, slots, maxLen] = [r.u32(), r.u32(), r.u32(), r.u32(), r.u32(), r.u32()] as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  const model = r.utf8()
  const roster = r.utf8()
  r.end()
  if (hi <= lo || hi > numLayers || nodes < 2 || slots < 1 || maxLen < 1)
    throw new RangeError(`plan message is inconsistent: layers [${lo}, ${hi}) of ${numLayers}`)
  return { ok: true, lo, hi, numLayers, nodes, slots, maxLen, model, roster }
}
