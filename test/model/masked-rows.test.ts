/** A grammar's mask read in the shim (ffi/sample.c) picks the same tokens as the TypeScript path: the readers agree on
 * random rows and masks (ties, −∞, NaN, masks shorter and longer than the row), every vector path of the C build agrees,
 * and sampleToken under a mask draws what the sampler drew before, when it wrote −∞ into a copy of the row. */
import { describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DbcError } from '../../src/errors.ts'
import { maskedRows, nativeMaskedRows, typescriptMaskedRows, type MaskedRows } from '../../src/model/masked-rows.ts'
import {
  argmax,
  collectCandidates,
  CUTOFF,
  drawCandidate,
  penalized,
  reserveCandidates,
  sampleToken,
  samplingParams,
  seededRandom,
  type LogitBias,
  type SamplingParams,
} from '../../src/model/sampler.ts'
import { openSampleLibrary } from '../../src/tensor/native.ts'

const ROOT = new URL('../..', import.meta.url).pathname

/** The sampler before the shim read masks: −∞ written over a copy of the row, then the unmasked path. */
function reference(
  input: Float32Array,
  params: SamplingParams,
  history: number[],
  u: number,
  bias: LogitBias | undefined,
  allowed: Uint32Array,
): number {
  const logits = penalized(input, 0, params, history, bias, allowed)
  if (params.temperature === 0) return argmax(logits)
  const max = logits[argmax(logits)]!
  reserveCandidates(logits.length)
  return drawCandidate(collectCandidates(logits, 0, max - CUTOFF * params.temperature, 0), max, params, u)
}

/** A random row: spread values, or few distinct values (ties), with some −∞ and NaN when asked. */
function row(random: () => number, n: number, kind: 'spread' | 'ties' | 'odd'): Float32Array {
  return Float32Array.from({ length: n }, () => {
    if (kind === 'ties') return Math.floor(random() * 4)
    const v = (random() - 0.5) * 30
    if (kind === 'odd') {
      const r = random()
      if (r < 0.05) return -Infinity
      if (r < 0.08) return NaN
    }
    return v
  })
}

/** A random mask shaped like a grammar's: mostly-allowed words with holes, empty and full words, a few single bits;
 * `words` may be shorter or longer than the row needs. */
function mask(random: () => number, words: number, density: number): Uint32Array {
  return Uint32Array.from({ length: words }, () => {
    const r = random()
    if (r < 0.2) return 0
    if (r < 0.4) return 0xffffffff
    if (r < 0.5) return (1 << Math.floor(random() * 32)) >>> 0
    let w = 0
    for (let b = 0; b < 32; b++) if (random() < density) w |= 1 << b
    return w >>> 0
  })
}

const one = (n: number, id: number) => {
  const m = new Uint32Array(Math.ceil(n / 32))
  m[id >> 5] = 1 << (id & 31)
  return m
}

const keysOf = (reader: MaskedRows, logits: Float32Array, allowed: Uint32Array, floor: number) => {
  const keys = new Float64Array(logits.length)
  const n = reader.candidates(logits, allowed, floor, keys)
  return new Uint32Array(keys.buffer, 0, 2 * n)
}

/** The readers agree with the TypeScript one on every case here. */
function agreeWithTypescript(reader: MaskedRows) {
  const random = seededRandom(7)
  for (const n of [1, 31, 32, 33, 1003, 4096, 151_936]) {
    for (const kind of ['spread', 'ties', 'odd'] as const) {
      const logits = row(random, n, kind)
      const need = Math.ceil(n / 32)
      for (const words of [need, Math.max(0, need - 2), need + 3]) {
        for (const density of [0.02, 0.5, 0.97]) {
          const allowed = mask(random, words, density)
          const best = typescriptMaskedRows.argmax(logits, allowed)
          expect(reader.argmax(logits, allowed)).toBe(best)
          if (best < 0) continue
          for (const floor of [logits[best]! - 3, logits[best]! - 40, -Infinity, NaN])
            expect(keysOf(reader, logits, allowed, floor)).toEqual(keysOf(typescriptMaskedRows, logits, allowed, floor))
        }
      }
    }
    // one allowed token wins whatever its logit, even −∞ or NaN; none allowed is -1
    const logits = row(random, n, 'spread')
    for (const id of [0, n - 1, Math.floor(n / 2)]) {
      for (const v of [logits[id]!, -Infinity, NaN]) {
        const l = Float32Array.from(logits)
        l[id] = v
        expect(reader.argmax(l, one(n, id))).toBe(id)
      }
    }
    expect(reader.argmax(logits, new Uint32Array(Math.ceil(n / 32)))).toBe(-1)
    expect(reader.argmax(logits, new Uint32Array(0))).toBe(-1)
  }
  // allowed bits past the row's end do not count
  const tail = new Uint32Array(2)
  tail[1] = 0xfffffff0
  expect(reader.argmax(new Float32Array(36), tail)).toBe(-1)
}

describe('masked rows', () => {
  test('the shim is the reader the sampler uses here', () => {
    expect(maskedRows()).not.toBe(typescriptMaskedRows)
  })

  test('the shim agrees with the TypeScript reader (ties, −∞, NaN, short and long masks, one token, none)', () => {
    agreeWithTypescript(nativeMaskedRows(openSampleLibrary()))
  })

  // every vector path the shim can be built with (AVX-512, AVX2, plain C): ffi/sample.c alone, built three ways
  const cc = Bun.which('cc')
  test.skipIf(process.arch !== 'x64' || !cc)(
    'each x86-64 build of ffi/sample.c (native, x86-64-v3, x86-64) agrees with the TypeScript reader',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'dbc-sample-'))
      for (const march of ['native', 'x86-64-v3', 'x86-64']) {
        const out = join(dir, `sample-${march}.so`)
        const flags = ['-O3', '-std=c11', '-fPIC', '-shared', '-Wall', '-Wextra', '-Wno-unused-parameter']
        const sources = [join(ROOT, 'ffi/sample.c'), join(ROOT, 'ffi/tensor.c')]
        const r = Bun.spawnSync([cc!, ...flags, `-march=${march}`, '-o', out, ...sources, '-lm'], { stderr: 'pipe' })
        expect(r.exitCode, r.stderr.toString()).toBe(0)
        expect(r.stderr.toString()).toBe('')
        expect(existsSync(out)).toBe(true)
        agreeWithTypescript(nativeMaskedRows(openSampleLibrary(out)))
      }
    },
    120_000,
  )
})

describe('sampleToken under a mask', () => {
  const VOCAB = 151_936
  const random = seededRandom(11)
  const logits = row(random, VOCAB, 'spread')
  const settings: Partial<SamplingParams>[] = [
    {},
    { temperature: 0.7 },
    { temperature: 1, topP: 0.9 },
    { temperature: 1.3, topK: 40 },
    { temperature: 0.8, minP: 0.05 },
    { temperature: 0.9, topK: 50, topP: 0.8, minP: 0.02 },
    { temperature: 0, repetitionPenalty: 1.3 },
    { temperature: 0.6, repetitionPenalty: 1.2, topP: 0.95 },
  ]

  test('draws what the sampler drew when it wrote −∞ into a copy (greedy and seeded; top-p, top-k, min-p, penalties, bias)', () => {
    let compared = 0
    for (const setting of settings) {
      const params = samplingParams(setting)
      const draw = seededRandom(3)
      for (let trial = 0; trial < 6; trial++) {
        const allowed = mask(random, VOCAB / 32, [0.01, 0.5, 0.98][trial % 3]!)
        const history = Array.from({ length: 20 }, () => Math.floor(random() * VOCAB))
        // the bias and penalties touch allowed and masked tokens alike
        const ids = Int32Array.from({ length: 8 }, () => Math.floor(random() * VOCAB)).sort()
        const bias: LogitBias | undefined =
          trial % 2 ? { ids, values: Float64Array.from(ids, () => (random() - 0.5) * 40) } : undefined
        const u = draw()
        const want = reference(logits, params, history, u, bias, allowed)
        expect(sampleToken(logits, params, history, u, bias, allowed)).toBe(want)
        compared++
      }
    }
    expect(compared).toBe(settings.length * 6)
  })

  test('a mask allowing one token gives that token, whatever its logit and the settings', () => {
    const worst = argmax(logits.map((v) => -v))
    for (const setting of settings) {
      const params = samplingParams(setting)
      expect(sampleToken(logits, params, [], 0.5, undefined, one(VOCAB, worst))).toBe(worst)
      expect(sampleToken(logits, params, [], 0.99, undefined, one(VOCAB, VOCAB - 1))).toBe(VOCAB - 1)
    }
  })

  test('a mask allowing no token is an error that says so', () => {
    for (const allowed of [new Uint32Array(VOCAB / 32), new Uint32Array(0)]) {
      for (const setting of [{}, { temperature: 1 }]) {
        let error: unknown
        try {
          sampleToken(logits, samplingParams(setting), [], 0.5, undefined, allowed)
        } catch (e) {
          error = e
        }
        expect(error).toBeInstanceOf(DbcError)
        expect((error as DbcError).code).toBe('E_CONSTRAINT')
        expect((error as DbcError).message).toContain("the grammar's mask allows none of the 151936 tokens")
      }
    }
  })
})
