/** Grammar-constrained decoding through XGrammar (its WASM build, @mlc-ai/web-xgrammar): a constraint — any JSON object,
 * a JSON Schema, an EBNF grammar or a structural tag — is compiled once per tokenizer (an LRU of compiled grammars keyed
 * by the spec) and gives each sequence its own matcher. The head asks the matcher which tokens may come next (a bitmask,
 * sent with the step's sampling to wherever the logits are), the sampler masks the rest to −∞, and the matcher accepts
 * the sampled token; the sequence ends when the grammar terminates. The JSON Schema keywords enforced are an allow-list
 * (schema-keywords.ts): anything else is refused by name rather than silently not enforced. */
import {
  GrammarCompiler,
  GrammarMatcher,
  TokenizerInfo,
  type CompiledGrammar,
  type StructuralTagLike,
} from '@mlc-ai/web-xgrammar'
import { DbcError } from '../errors.ts'
import { checkSchema } from './schema-keywords.ts'
import type { GrammarVocabulary } from './grammar-vocabulary.ts'

export type { GrammarVocabulary } from './grammar-vocabulary.ts'
export { grammarVocabulary } from './grammar-vocabulary.ts'

export type ConstraintSpec =
  /** any JSON object (OpenAI's `json_object`) */
  | { kind: 'json_object' }
  /** a value valid under this JSON Schema (the keywords of schema-keywords.ts) */
  | { kind: 'json_schema'; schema: Record<string, unknown> | boolean }
  /** text of an EBNF grammar (XGrammar's dialect), from `root` (default "root") */
  | { kind: 'ebnf'; grammar: string; root?: string }
  /** XGrammar's structural tag: free text until a trigger, then the tag's format (tool calls) */
  | { kind: 'structural_tag'; tag: StructuralTagLike }

/** A spec that cannot be compiled: `at` is a JSON pointer into the schema (json_schema), `keyword` the one refused. */
export class ConstraintError extends DbcError {
  constructor(
    message: string,
    readonly keyword?: string,
    readonly at?: string,
  ) {
    super('E_CONSTRAINT', message, 'see docs/api.md §response_format for what a schema may use')
  }
}

/** One sequence's state in its grammar. */
export interface ConstraintMatcher {
  /** Tokens allowed next: bit (id & 31) of word (id >> 5), 1 = allowed. A fresh array per call. */
  nextMask(): Promise<Uint32Array>
  /** Advances by a sampled token; false (and no change) when the grammar does not allow it. */
  accept(id: number): boolean
  /** The grammar is complete and a stop token was accepted: nothing may follow. */
  readonly terminated: boolean
  dispose(): void
}

/** A compiled constraint: makes one matcher per sequence (each of `n` choices has its own). */
export interface Constraint {
  readonly spec: ConstraintSpec
  matcher(): Promise<ConstraintMatcher>
}

// the separators the grammar enforces: compact JSON, no free whitespace (a model cannot pad forever)
const SEPARATORS: [string, string] = [',', ':']

/** Compiles constraints against one tokenizer; the TokenizerInfo (≈0.4 s for a 150k vocabulary) is built on first use. */
export class ConstraintCompiler {
  readonly #vocabulary: () => GrammarVocabulary
  readonly #cache = new Map<string, Promise<CompiledGrammar>>()
  #compiler: Promise<GrammarCompiler> | null = null
  #stopTokenIds: number[] = []
  /** Tokens without a raw control character (U+0000–U+001F), which compact JSON never holds. */
  #controlFree: Uint32Array | null = null

  constructor(
    vocabulary: GrammarVocabulary | (() => GrammarVocabulary),
    readonly cacheSize = 64,
  ) {
    this.#vocabulary = typeof vocabulary === 'function' ? vocabulary : () => vocabulary
  }

  /** Compiled grammars held (at most cacheSize). */
  get cached(): number {
    return this.#cache.size
  }

  #grammarCompiler(): Promise<GrammarCompiler> {
    this.#compiler ??= (async () => {
      const v = this.#vocabulary()
      this.#stopTokenIds = [...v.stopTokenIds]
      this.#controlFree = controlFreeMask(v)
      const info = await TokenizerInfo.createTokenizerInfo(
        v.tokens,
        v.vocabType,
        v.prependSpace,
        v.vocabSize,
        v.stopTokenIds,
      )
      return GrammarCompiler.createGrammarCompiler(info, false)
    })()
    // a vocabulary that could not be read is tried again by the next request
    this.#compiler.catch(() => (this.#compiler = null))
    return this.#compiler
  }

  /** Checks and compiles a spec (or takes it from the cache). Throws ConstraintError naming what cannot be enforced. */
  async compile(spec: ConstraintSpec): Promise<Constraint> {
    if (spec.kind === 'json_schema') checkSchema(spec.schema)
    const key = JSON.stringify(spec)
    let grammar = this.#cache.get(key)
    if (grammar) {
      // most recently used last
      this.#cache.delete(key)
      this.#cache.set(key, grammar)
    } else {
      grammar = this.#compile(spec)
      this.#cache.set(key, grammar)
      grammar.catch(() => this.#cache.delete(key))
      while (this.#cache.size > this.cacheSize) {
        const [oldest, evicted] = this.#cache.entries().next().value!
        this.#cache.delete(oldest)
        // a matcher keeps its own reference to the compiled grammar: disposing the handle here is safe
        void evicted.then((g) => g.dispose()).catch(() => {})
      }
    }
    const compiled = await grammar
    const stop = this.#stopTokenIds
    // XGrammar's strings admit a raw tab or newline (JSON requires them escaped): JSON grammars also mask those tokens
    const json = spec.kind === 'json_object' || spec.kind === 'json_schema'
    const also = json ? this.#controlFree! : null
    return {
      spec,
      matcher: async () => new XgrammarMatcher(await GrammarMatcher.createGrammarMatcher(compiled, stop), also),
    }
  }

  async #compile(spec: ConstraintSpec): Promise<CompiledGrammar> {
    const compiler = await this.#grammarCompiler()
    try {
      switch (spec.kind) {
        case 'json_object':
          return await compiler.compileJSONSchema('{"type":"object"}', false, -1, SEPARATORS, true)
        case 'json_schema':
          return await compiler.compileJSONSchema(JSON.stringify(spec.schema), false, -1, SEPARATORS, true)
        case 'ebnf':
          return await compiler.compileGrammar(spec.grammar, spec.root ?? 'root')
        case 'structural_tag':
          return await compiler.compileStructuralTag(spec.tag)
      }
    } catch (error) {
      // XGrammar reports a grammar it cannot build by aborting the call (the module stays usable)
      throw new ConstraintError(`the ${spec.kind} constraint could not be compiled: ${(error as Error).message}`)
    }
  }
}

class XgrammarMatcher implements ConstraintMatcher {
  #disposed = false
  constructor(
    readonly matcher: GrammarMatcher,
    readonly also: Uint32Array | null,
  ) {}

  async nextMask(): Promise<Uint32Array> {
    if (this.#disposed) return new Uint32Array(0)
    const bits = await this.matcher.getNextTokenBitmask()
    const mask = new Uint32Array(bits.buffer, bits.byteOffset, bits.length)
    if (this.also) for (let i = 0; i < mask.length; i++) mask[i] = mask[i]! & (this.also[i] ?? 0)
    return mask
  }

  accept(id: number): boolean {
    return !this.#disposed && this.matcher.acceptToken(id)
  }

  get terminated(): boolean {
    return this.#disposed || this.matcher.isTerminated()
  }

  dispose(): void {
    if (this.#disposed) return
    this.#disposed = true
    this.matcher.dispose()
  }
}

/** The tokens whose text has no raw control character: a byte-level token's characters map back to bytes through
 * GPT-2's table (bytes 0–31 are written as U+0100–U+0120), a byte-fallback token `<0x09>` is that byte. */
function controlFreeMask(v: GrammarVocabulary): Uint32Array {
  const mask = new Uint32Array(Math.ceil(v.vocabSize / 32))
  const control = (token: string): boolean => {
    if (v.vocabType === 'byte_fallback') {
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(token)
      if (byte) return parseInt(byte[1]!, 16) < 0x20
    }
    for (const ch of token) {
      const c = ch.codePointAt(0)!
      if (v.vocabType === 'byte_level' ? c >= 0x100 && c <= 0x120 : c < 0x20) return true
    }
    return false
  }
  v.tokens.forEach((token, id) => {
    if (!control(token)) mask[id >> 5] = mask[id >> 5]! | (1 << (id & 31))
  })
  for (let id = v.tokens.length; id < v.vocabSize; id++) mask[id >> 5] = mask[id >> 5]! | (1 << (id & 31))
  return mask
}

/** The brief's one-call form: compile `spec` against `compiler` (shared per model: it holds the tokenizer's tables). */
export function compileConstraint(spec: ConstraintSpec, compiler: ConstraintCompiler): Promise<Constraint> {
  return compiler.compile(spec)
}

/** Whether token `id` is allowed by a mask (ids past its end are not). */
export const allows = (mask: Uint32Array, id: number): boolean =>
  id >> 5 < mask.length && ((mask[id >> 5]! >>> (id & 31)) & 1) === 1
