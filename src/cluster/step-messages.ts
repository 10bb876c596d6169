/** The per-step control protocol of the pipeline ring (docs/cluster.md): the head decides each step's composition — rows
 * (slot, position), which rows need logits, which KV slots open and close — and it travels with the activations in one
 * sealed `step` frame, so every stage stays in lockstep without a separate control round. The last stage answers with a
 * `activation` frame carrying the step id and the logits of the requested rows. Binary, little-endian, never JSON. */
import { decodeTensor, encodeTensor } from '../link/frames.ts'

export interface StepMessage {
  stepId: number
  slots: Int32Array
  positions: Int32Array
  logitRows: Int32Array
  /** KV slots to free, then to claim, on every stage before this step runs. */
  closeSlots: Int32Array
  openSlots: Int32Array
  /** Token ids (to the stage holding the embedding) or hidden states [rows, hidden] (to later stages). */
  tokens?: Int32Array
  hidden?: Float32Array
  hiddenSize: number
}

export interface StepResult {
  stepId: number
  /** [logitRows, vocab] */
  logits: Float32Array
  vocab: number
}

class Writer {
  readonly parts: Uint8Array[] = []
  u32(v: number) {
    const b = new Uint8Array(4)
    new DataView(b.buffer).setUint32(0, v, true)
    this.parts.push(b)
  }
  ints(a: Int32Array) {
    this.u32(a.length)
    this.parts.push(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
  }
  bytes(b: Uint8Array) {
    this.u32(b.byteLength)
    this.parts.push(b)
  }
  join(): Uint8Array {
    const out = new Uint8Array(this.parts.reduce((a, p) => a + p.byteLength, 0))
    let at = 0
    for (const p of this.parts) out.set(p, at), (at += p.byteLength)
    return out
  }
}

class Reader {
  at = 0
  readonly view: DataView
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }
  u32(): number {
    if (this.at + 4 > this.bytes.byteLength) throw new RangeError('step message truncated')
    const v = this.view.getUint32(this.at, true)
    this.at += 4
    return v
  }
  ints(): Int32Array {
    const n = this.u32()
    if (n > 1 << 24 || this.at + 4 * n > this.bytes.byteLength) throw new RangeError('step message has a bad array length')
    const out = new Int32Array(n)
    for (let i = 0; i < n; i++) out[i] = this.view.getInt32(this.at + 4 * i, true)
    this.at += 4 * n
    return out
  }
  bytesField(): Uint8Array {
    const n = this.u32()
    if (this.at + n > this.bytes.byteLength) throw new RangeError('step message truncated')
    const out = this.bytes.subarray(this.at, this.at + n)
    this.at += n
    return out
  }
}

export function encodeStep(m: StepMessage): Uint8Array {
  const w = new Writer()
  w.u32(m.stepId)
  w.ints(m.slots)
  w.ints(m.positions)
  w.ints(m.logitRows)
  w.ints(m.closeSlots)
  w.ints(m.openSlots)
  w.u32(m.hiddenSize)
  if (m.tokens) w.bytes(encodeTensor('i32', [m.tokens.length], new Uint8Array(m.tokens.buffer, m.tokens.byteOffset, m.tokens.byteLength)))
  else w.bytes(encodeTensor('f32', [m.slots.length, m.hiddenSize], new Uint8Array(m.hidden!.buffer, m.hidden!.byteOffset, m.hidden!.byteLength)))
  return w.join()
}

export function decodeStep(bytes: Uint8Array): StepMessage {
  const r = new Reader(bytes)
  const stepId = r.u32()
  const slots = r.ints()
  const positions = r.ints()
  const logitRows = r.ints()
  const closeSlots = r.ints()
  const openSlots = r.ints()
  const hiddenSize = r.u32()
  const tensor = decodeTensor(r.bytesField())
  if (positions.length !== slots.length) throw new RangeError('step message: slots and positions differ in length')
  const copy = tensor.data.slice()
  if (tensor.dtype === 'i32') {
    if (tensor.shape[0] !== slots.length) throw new RangeError('step message: token count differs from rows')
    return { stepId, slots, positions, logitRows, closeSlots, openSlots, hiddenSize, tokens: new Int32Array(copy.buffer) }
  }
  if (tensor.dtype !== 'f32' || tensor.shape[0] !== slots.length || tensor.shape[1] !== hiddenSize) throw new RangeError('step message: hidden states have the wrong shape')
  return { stepId, slots, positions, logitRows, closeSlots, openSlots, hiddenSize, hidden: new Float32Array(copy.buffer) }
}

export function encodeResult(r: StepResult): Uint8Array {
  const w = new Writer()
  w.u32(r.stepId)
  w.bytes(encodeTensor('f32', [r.logits.length / r.vocab, r.vocab], new Uint8Array(r.logits.buffer, r.logits.byteOffset, r.logits.byteLength)))
  return w.join()
}

export function decodeResult(bytes: Uint8Array): StepResult {
  const r = new Reader(bytes)
  const stepId = r.u32()
  const t = decodeTensor(r.bytesField())
  if (t.dtype !== 'f32' || t.shape.length !== 2) throw new RangeError('step result: logits must be f32 [rows, vocab]')
  return { stepId, logits: new Float32Array(t.data.slice().buffer), vocab: t.shape[1]! }
}
