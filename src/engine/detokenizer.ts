/** Incremental detokenisation: emits only text that is final, holding back a trailing partial UTF-8 character (U+FFFD)
 * until the bytes that complete it arrive. */
export class IncrementalDetokenizer {
  readonly #ids: number[] = []
  #prefixOffset = 0
  #readOffset = 0

  constructor(private readonly decode: (ids: number[]) => string) {}

  /** Adds a token and returns the new text it completes (possibly ''). */
  push(id: number): string {
    this.#ids.push(id)
    const prefix = this.decode(this.#ids.slice(this.#prefixOffset, this.#readOffset))
    const full = this.decode(this.#ids.slice(this.#prefixOffset))
    if (full.length > prefix.length && !full.endsWith('\uFFFD')) {
      const text = full.slice(prefix.length)
      this.#prefixOffset = this.#readOffset
      this.#readOffset = this.#ids.length
      return text
    }
    return ''
  }

  /** Whatever is still held back (at the end of generation). */
  flush(): string {
    const prefix = this.decode(this.#ids.slice(this.#prefixOffset, this.#readOffset))
    const full = this.decode(this.#ids.slice(this.#prefixOffset))
    this.#prefixOffset = this.#readOffset = this.#ids.length
    return full.slice(prefix.length)
  }
}
