/** Grammar-constrained decoding through XGrammar (its WASM build, @mlc-ai/web-xgrammar): a constraint — any JSON object,
 * a JSON Schema, an EBNF grammar or a structural tag — is compiled once per tokenizer (an LRU of compiled grammars keyed
 * by the spec) and gives each sequence its own matcher. The head asks the matcher which tokens may come next (a bitmask,
 * sent with the step's sampling to wherever the logits are), the sampler masks the rest to −∞, and the matcher accepts
 * the sampled token; the sequence ends when the grammar terminates. The JSON Schema keywords enforced are an allow-list
 * (schema-keywords.ts): anything else is refused by name rather than silently not enforced. */
import {
  Grammar,
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

/** A counted repeat in a printed grammar (`x{0, 72}`); a string literal that looks like one only sends the schema down
 * XGrammar's own path. */
const COUNTED_REPEAT = /[\w)\]]\{\d+(, ?\d*)?\}/

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
        case 'json_schema': {
          // XGrammar's own grammar for the schema, its bounded repetitions folded (foldOptionalChains), compiled
          const schema = JSON.stringify(spec.schema)
          const grammar = await Grammar.fromJSONSchema(schema, false, -1, SEPARATORS, true)
          const printed = grammar.toString()
          grammar.dispose()
          // past 128 items XGrammar writes a counted repeat `x{0, n}`, which costs more printed and parsed back (a
          // 200-character string: masks 0.7 → 1.4 ms, compile 8 → 11 s) than kept as XGrammar builds it
          if (COUNTED_REPEAT.test(printed)) return await compiler.compileJSONSchema(schema, false, -1, SEPARATORS, true)
          return await compiler.compileGrammar(foldOptionalChains(printed), 'root')
        }
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

/** A grammar as XGrammar prints it (one rule a line, `name ::= (choice | choice) (= lookahead)?`) with every optional
 * chain folded into what follows it. XGrammar writes a bounded repetition — a string's maxLength, an array's maxItems —
 * as a chain `c_i ::= ("" | (x c_i+1))` used as `... c_1 T`; its matcher keeps every "stop here" branch of the chain
 * open, so the mask of a token inside a long chain costs milliseconds (8–47 ms for a 24-character string measured; see
 * docs/benchmarks.md). Folded, `c_i ::= (T | (x c_i+1))` and the use is `... c_1`: the same language, decided by the
 * token that ends the repetition (about 0.1 ms). A chain is folded only where each of its rules is used once, as the
 * last element of the previous one, and has no lookahead; anything else is left as it was. */
export function foldOptionalChains(text: string): string {
  const lines = text.split('\n')
  const rules = new Map<string, { line: number; body: Rule }>()
  lines.forEach((line, i) => {
    const m = /^([A-Za-z0-9_]+) ::= (.*)$/.exec(line)
    const body = m ? parseRule(m[2]!) : null
    if (m && body) rules.set(m[1]!, { line: i, body })
  })
  // every reference, from every line (one this parser does not read included)
  const uses = new Map<string, number>()
  for (const line of lines) {
    const rhs = line.slice(line.indexOf(' ::= ') + 5)
    for (const word of splitTop(rhs.replace(/[()|*+?]/g, ' '), ' ') ?? [rhs])
      if (rules.has(word)) uses.set(word, (uses.get(word) ?? 0) + 1)
  }
  /** The chain from `head`: rules `("" | (... next))`, each used once, ending in `("" | (...))`; null if not one. */
  const chainFrom = (head: string): string[] | null => {
    const chain: string[] = []
    for (let name: string | undefined = head; name !== undefined;) {
      const rule = rules.get(name)
      if (!rule || uses.get(name) !== 1 || rule.body.lookahead || chain.includes(name)) return null
      const [empty, seq, ...rest] = rule.body.choices
      if (!empty || empty.length !== 0 || !seq?.length || rest.length) return null
      chain.push(name)
      const last = seq.at(-1)!
      name =
        rules.has(last) && uses.get(last) === 1 && rules.get(last)!.body.choices[0]?.length === 0 ? last : undefined
    }
    return chain
  }
  const changed = new Set<string>()
  for (const [name, { body }] of rules) {
    if (changed.has(name)) continue
    for (const seq of body.choices) {
      for (let i = 0; i < seq.length - 1; i++) {
        const chain = rules.has(seq[i]!) ? chainFrom(seq[i]!) : null
        if (!chain || chain.some((c) => changed.has(c) || c === name)) continue
        const tail = seq.splice(i + 1)
        chain.forEach((c, k) => {
          const [, next] = rules.get(c)!.body.choices
          // the empty branch becomes what followed the chain; the last rule's item is followed by it too
          rules.get(c)!.body.choices = [tail, k === chain.length - 1 ? [...next!, ...tail] : next!]
          changed.add(c)
        })
        changed.add(name)
        break
      }
    }
  }
  for (const name of changed) {
    const { line, body } = rules.get(name)!
    lines[line] = `${name} ::= ${printRule(body)}`
  }
  return lines.join('\n')
}

interface Rule {
  /** each choice a sequence of elements as printed (an empty one is "") */
  choices: string[][]
  lookahead?: string
}

/** Splits `s` at top-level occurrences of `separator` (outside quotes, character classes and parentheses). */
function splitTop(s: string, separator: string): string[] | null {
  const parts: string[] = []
  let depth = 0
  let start = 0
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!
    if (c === '"' || c === '[') {
      const close = c === '"' ? '"' : ']'
      for (i++; i < s.length && s[i] !== close; i++) if (s[i] === '\\') i++
      if (i >= s.length) return null
    } else if (c === '(') depth++
    else if (c === ')') depth--
    else if (depth === 0 && s.startsWith(separator, i)) {
      parts.push(s.slice(start, i))
      start = i + separator.length
      i += separator.length - 1
    }
    if (depth < 0) return null
  }
  if (depth !== 0) return null
  parts.push(s.slice(start))
  return parts
}

/** `(choice | choice) (= lookahead)?` as printed; null for any other shape (the rule is then left alone). */
function parseRule(text: string): Rule | null {
  const top = splitTop(text.trim(), ' ')
  if (!top || top.length > 2) return null
  const [group, lookahead] = top
  if (lookahead !== undefined && !lookahead.startsWith('(=')) return null
  if (!group!.startsWith('(') || !group!.endsWith(')') || splitTop(group!, ' ')!.length !== 1) return null
  const choices = splitTop(group!.slice(1, -1), ' | ')
  if (!choices) return null
  const sequences: string[][] = []
  for (const raw of choices) {
    const choice = raw.trim()
    if (choice === '""') {
      sequences.push([])
      continue
    }
    const inner = choice.startsWith('(') && choice.endsWith(')') && splitTop(choice, ' ')!.length === 1
    const elements = splitTop(inner ? choice.slice(1, -1) : choice, ' ')
    if (!elements || elements.some((e) => !e || e === '|')) return null
    sequences.push(elements)
  }
  return lookahead ? { choices: sequences, lookahead } : { choices: sequences }
}

const printRule = (rule: Rule): string =>
  `(${rule.choices.map((seq) => (seq.length ? `(${seq.join(' ')})` : '""')).join(' | ')})` +
  (rule.lookahead ? ` ${rule.lookahead}` : '')
