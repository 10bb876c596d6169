/** Little-endian field writer and reader for the cluster's binary messages (step, join, plan): u32, f64, i32 arrays and
 * length-prefixed bytes; a reader throws RangeError naming the message on anything truncated or malformed. */
export class Writer {
  readonly parts: Uint8Array[] = []
  u32(v: number) {
    const b = new Uint8Array(4)
    new DataView(b.buffer).setUint32(0, v, true)
    this.parts.push(b)
  }
  f64(v: number) {
    const b = new Uint8Array(8)
    new DataView(b.buffer).setFloat64(0, v, true)
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
  utf8(s: string) {
    this.bytes(new TextEncoder().encode(s))
  }
  join(): Uint8Array {
    const out = new Uint8Array(this.parts.reduce((a, p) => a + p.byteLength, 0))
    let at = 0
    for (const p of this.parts) (out.set(p, at), (at += p.byteLength))
    return out
  }
}

export class Reader {
  at = 0
  readonly view: DataView
  constructor(
    readonly bytes: Uint8Array,
    readonly what = 'step message',
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }
  u32(): number {
    if (this.at + 4 > this.bytes.byteLength) throw new RangeError(`${this.what} truncated`)
    const v = this.view.getUint32(this.at, true)
    this.at += 4
    return v
  }
  f64(): number {
    if (this.at + 8 > this.bytes.byteLength) throw new RangeError(`${this.what} truncated`)
    const v = this.view.getFloat64(this.at, true)
    this.at += 8
    return v
  }
  i32(): number {
    return this.u32() | 0
  }
  ints(): Int32Array {
    const n = this.u32()
    if (n > 1 << 24 || this.at + 4 * n > this.bytes.byteLength)
      throw new RangeError(`${this.what} has a bad array length`)
    const out = new Int32Array(n)
    for (let i = 0; i < n; i++) out[i] = this.view.getInt32(this.at + 4 * i, true)
    this.at += 4 * n
    return out
  }
  bytesField(): Uint8Array {
    const n = this.u32()
    if (this.at + n > this.bytes.byteLength) throw new RangeError(`${this.what} truncated`)
    const out = this.bytes.subarray(this.at, this.at + n)
    this.at += n
    return out
  }
  utf8(): string {
    return new TextDecoder('utf-8', { fatal: true }).decode(this.bytesField())
  }
  /** Refuses trailing bytes: a message is exactly its fields. */
  end(): void {
    if (this.at !== this.bytes.byteLength)
      throw new RangeError(`${this.what} has ${this.bytes.byteLength - this.at} trailing bytes`)
  }
}
