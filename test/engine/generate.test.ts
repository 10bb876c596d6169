/** The generation loop over the Pipeline seam, with a scripted pipeline: chunked prefill positions, EOS, stop strings,
 * the token limit, the context limit, and the slot freed however generation ends. */
import { describe, expect, test } from 'bun:test'
import { generate, type GenerationEvent, type GenerationRequest } from '../../src/engine/generate.ts'
import type { Pipeline } from '../../src/engine/pipeline.ts'
import { GREEDY } from '../../src/engine/sampler.ts'
import type { StageInput } from '../../src/model/shard.ts'

const VOCAB = 8
/** Token i decodes to WORDS[i]; token 7 is EOS. */
const WORDS = ['a', 'b', 'c', ' STOP', 'é', '<', '/', '</s>']
const decode = (ids: number[]) => ids.map((i) => WORDS[i]).join('')
const PROMPT = [0, 1, 2, 0, 1]

/** Every step whose last row reaches the end of the prompt is sampled; greedy then picks `script[n]` at the n-th such step. */
class ScriptedPipeline implements Pipeline {
  readonly vocabSize = VOCAB
  readonly steps: StageInput[] = []
  readonly open = new Set<number>()
  constructor(
    private readonly script: number[],
    readonly maxLen = 64,
    private readonly failAt = -1,
  ) {}
  openSequence() {
    this.open.add(3)
    return 3
  }
  closeSequence(slot: number) {
    this.open.delete(slot)
  }
  async step(input: StageInput) {
    this.steps.push(input)
    if (this.steps.length === this.failAt) throw new Error('stage 1 went away')
    const sampled = this.steps.filter((s) => s.positions.at(-1)! >= PROMPT.length - 1).length
    const logits = new Float32Array(VOCAB)
    logits[this.script[Math.min(Math.max(sampled - 1, 0), this.script.length - 1)]!] = 5
    return logits
  }
}

async function run(pipeline: Pipeline, request: Partial<GenerationRequest>) {
  const events: GenerationEvent[] = []
  for await (const e of generate(pipeline, { promptIds: PROMPT, maxTokens: 10, sampling: GREEDY, eosTokenIds: [7], ...request }, decode)) events.push(e)
  const done = events.at(-1)!
  if (done.type !== 'done') throw new Error('no done event')
  const streamed = events.filter((e) => e.type !== 'done').map((e) => ('text' in e ? e.text : '')).join('')
  return { events, done, streamed }
}

describe('generate', () => {
  test('chunked prefill sends consecutive positions in one slot, logits only for the last prompt row', async () => {
    const p = new ScriptedPipeline([1, 2, 7])
    const { done } = await run(p, { prefillChunk: 2 })
    expect(p.steps.slice(0, 3).map((s) => Array.from(s.positions))).toEqual([[0, 1], [2, 3], [4]])
    expect(p.steps.slice(0, 3).map((s) => Array.from(s.tokens!))).toEqual([[0, 1], [2, 0], [1]])
    expect(p.steps.every((s) => s.slots.every((x) => x === 3))).toBe(true)
    expect(Array.from(p.steps[2]!.logitRows!)).toEqual([0])
    // decode: one row per step at the next position, fed the sampled token
    expect(p.steps.slice(3).map((s) => [s.tokens![0], s.positions[0]])).toEqual([[1, 5], [2, 6]])
    expect(done).toMatchObject({ finishReason: 'stop', tokens: [1, 2], text: 'bc', promptTokens: 5 })
    expect(p.open.size).toBe(0)
  })

  test('the token limit ends with finish_reason length', async () => {
    const { done, streamed } = await run(new ScriptedPipeline([0, 1, 2, 0, 1, 2]), { maxTokens: 4 })
    expect(done).toMatchObject({ finishReason: 'length', tokens: [0, 1, 2, 0], text: 'abca' })
    expect(streamed).toBe('abca')
  })

  test('a stop string cuts the text before it, even when it spans tokens; the EOS token is never emitted', async () => {
    const { done, streamed } = await run(new ScriptedPipeline([0, 5, 6, 1, 5, 6, 7]), { stop: ['</b'] })
    expect(done.finishReason).toBe('stop')
    expect(done.text).toBe('a')
    expect(streamed).toBe('a')
    const plain = await run(new ScriptedPipeline([0, 3, 7]), {})
    expect(plain.done.text).toBe('a STOP')
    const stopped = await run(new ScriptedPipeline([0, 3, 0, 7]), { stop: ['STOP'] })
    expect(stopped.done).toMatchObject({ finishReason: 'stop', text: 'a ', tokens: [0, 3] })
  })

  test('a prefix of a stop string that never completes is released at the end', async () => {
    const { done, streamed } = await run(new ScriptedPipeline([0, 5]), { stop: ['</b'], maxTokens: 2 })
    expect(done).toMatchObject({ finishReason: 'length', text: 'a<' })
    expect(streamed).toBe('a<')
  })

  test('the context limit stops decoding; a prompt that does not fit is refused; an empty prompt is refused', async () => {
    const { done } = await run(new ScriptedPipeline([0], 8), { maxTokens: 100 })
    expect(done.tokens.length).toBe(3) // positions 5, 6, 7 fill the 8-token context
    await expect(run(new ScriptedPipeline([0], 5), {})).rejects.toThrow(/the prompt has 5 tokens; the context holds 5/)
    await expect(run(new ScriptedPipeline([0]), { promptIds: [] })).rejects.toThrow(/the prompt is empty/)
  })

  test('a failing step frees the slot and surfaces the error', async () => {
    const p = new ScriptedPipeline([0, 1, 2], 64, 3)
    await expect(run(p, {})).rejects.toThrow(/stage 1 went away/)
    expect(p.open.size).toBe(0)
  })
})
