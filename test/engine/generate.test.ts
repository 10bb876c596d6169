/** The reference generation loop (test/support/generate.ts) over the Pipeline seam, with a scripted pipeline: chunked prefill positions, EOS, stop strings,
 * the token limit, the context limit, and the slot freed however generation ends. */
import { describe, expect, test } from 'bun:test'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generate, type GenerationEvent, type GenerationRequest } from '../support/generate.ts'
import type { Pipeline } from '../../src/engine/pipeline.ts'
import { GREEDY, sampleRows, type RowSampling } from '../../src/model/sampler.ts'
import type { StageInput } from '../../src/model/shard.ts'
import { synthModel } from '../support/synth-models.ts'

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
  async sample(input: StageInput, rows: readonly RowSampling[]) {
    const logits = await this.step(input)
    return rows.length ? sampleRows(logits, VOCAB, rows) : []
  }
}

async function run(pipeline: Pipeline, request: Partial<GenerationRequest>) {
  const events: GenerationEvent[] = []
  for await (const e of generate(
    pipeline,
    { promptIds: PROMPT, maxTokens: 10, sampling: GREEDY, eosTokenIds: [7], ...request },
    decode,
  ))
    events.push(e)
  const done = events.at(-1)!
  if (done.type !== 'done') throw new Error('no done event')
  const streamed = events
    .filter((e) => e.type !== 'done')
    .map((e) => ('text' in e ? e.text : ''))
    .join('')
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
    expect(p.steps.slice(3).map((s) => [s.tokens![0], s.positions[0]])).toEqual([
      [1, 5],
      [2, 6],
    ])
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

describe('dbcluster generate on a synthetic model', () => {
  const ROOT = new URL('../..', import.meta.url).pathname
  const cli = (...args: string[]) => {
    // consola is silent under NODE_ENV=test; the command's own info lines are part of what is checked
    const { NODE_ENV: _, TEST: __, ...env } = process.env
    const r = Bun.spawnSync([process.execPath, 'src/main.ts', 'generate', ...args, '--backend', 'cpu'], {
      cwd: ROOT,
      env,
      stdout: 'pipe',
      stderr: 'pipe',
    })
    return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() }
  }

  test('--messages renders the chat template: the same tokens as --chat for one user message; bad files are usage errors', async () => {
    const dir = await synthModel('qwen3', 'q4')
    const file = join(mkdtempSync(join(tmpdir(), 'dbc-msg-')), 'messages.json')
    writeFileSync(file, JSON.stringify([{ role: 'user', content: 'Hello there' }]))
    const a = cli('--model', dir, '--messages', file, '--max-tokens', '6', '--json')
    expect(a.code, a.err).toBe(0)
    const viaChat = JSON.parse(cli('--model', dir, '--chat', 'Hello there', '--max-tokens', '6', '--json').out)
    const viaMessages = JSON.parse(a.out)
    expect(viaMessages.tokens).toEqual(viaChat.tokens)
    // the template adds <|im_start|> user \n … <|im_end|> \n <|im_start|> assistant \n <think> \n\n </think> \n\n: 12 tokens
    expect(viaMessages.prompt_tokens).toBe(
      JSON.parse(cli('--model', dir, '--prompt', 'Hello there', '--max-tokens', '1', '--json').out).prompt_tokens + 12,
    )
    writeFileSync(file, '{"role": "user"}')
    const bad = cli('--model', dir, '--messages', file)
    expect(bad.code).toBe(2)
    expect(bad.err).toContain('must hold a non-empty array of {role, content}')
  }, 60_000)

  test('streams text and ends with prompt and decode speeds', async () => {
    const r = cli('--model', await synthModel('qwen3', 'q4'), '--prompt', 'The', '--max-tokens', '5')
    expect(r.code, r.err).toBe(0)
    expect(r.out.length).toBeGreaterThan(1)
    expect(r.out + r.err).toMatch(/prompt 1 tokens at [\d.]+ tok\/s; 5 tokens at [\d.]+ tok\/s \(length\)/)
  }, 60_000)
})
