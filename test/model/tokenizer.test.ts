import { describe, expect, test } from 'bun:test'
import { IncrementalDetokenizer } from '../../src/engine/detokenizer.ts'
import { ModelTokenizer } from '../../src/model/tokenizer.ts'
import { synthModel } from '../support/synth-models.ts'

describe('tokenizer and chat template (real Qwen3 files)', async () => {
  const tokenizer = new ModelTokenizer(await synthModel('qwen3', 'bf16'), [151645])

  test('round trips ASCII, accents, CJK and emoji', () => {
    for (const text of [
      'Hello, world!',
      'naïve café — déjà vu',
      '你好，世界',
      'emoji 🙂👍🏽 and \u{1F9EA}',
      '  leading spaces\nand lines\t',
    ]) {
      expect(tokenizer.decode(tokenizer.encode(text))).toBe(text)
    }
    expect(tokenizer.encode('Hello, world')).toEqual([9707, 11, 1879])
  })

  test('EOS ids come from config, generation_config and the tokenizer', () => {
    expect(tokenizer.eosTokenIds.sort()).toEqual([151643, 151645])
  })

  test('the chat template renders the Qwen3 prompt', () => {
    expect(
      tokenizer.applyChatTemplate([
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
      ]),
    ).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
    )
  })

  test('incremental detokenisation never splits a multi-byte character', () => {
    const text = '🙂 你好 naïve 👍🏽'
    const ids = tokenizer.encode(text)
    const detok = new IncrementalDetokenizer((x) => tokenizer.decode(x))
    const pieces = ids.map((id) => detok.push(id))
    pieces.push(detok.flush())
    expect(pieces.join('')).toBe(text)
    for (const p of pieces) expect(p).not.toContain('\uFFFD')
    // the emoji spans several byte-level tokens: some pushes must have held text back
    expect(pieces.filter((p) => p === '').length).toBeGreaterThan(0)
  })
})
