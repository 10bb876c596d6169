/** Tokenizer of a model folder through @huggingface/tokenizers (tokenizer.json), with its chat template (chat-template.ts)
 * and EOS ids gathered from config.json, generation_config.json and the tokenizer's eos token. */
import { Tokenizer } from '@huggingface/tokenizers'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { readJson } from './checkpoint.ts'
import { ChatTemplate, type ChatMessage, type ChatTemplateOptions } from './chat-template.ts'
import { CheckpointError } from './errors.ts'

export type { ChatMessage } from './chat-template.ts'

export class ModelTokenizer {
  readonly #tokenizer: Tokenizer
  readonly #template: ChatTemplate | null
  readonly eosTokenIds: number[]
  readonly bosToken: string | null
  readonly eosToken: string | null

  constructor(dir: string, configEos: number[] = []) {
    const json = readJson(join(dir, 'tokenizer.json'), 'tokenizer.json')
    const config = existsSync(join(dir, 'tokenizer_config.json'))
      ? readJson(join(dir, 'tokenizer_config.json'), 'tokenizer_config.json')
      : {}
    this.#tokenizer = new Tokenizer(json as never, config as never)
    const tokenText = (v: unknown) =>
      typeof v === 'string'
        ? v
        : v && typeof v === 'object' && 'content' in v
          ? String((v as { content: unknown }).content)
          : null
    this.bosToken = tokenText(config.bos_token)
    this.eosToken = tokenText(config.eos_token)
    // newer Hugging Face folders keep the template beside the config, in chat_template.jinja
    const jinja = join(dir, 'chat_template.jinja')
    this.#template =
      ChatTemplate.fromTokenizerConfig(config, { bos: this.bosToken, eos: this.eosToken }) ??
      (existsSync(jinja)
        ? new ChatTemplate(readFileSync(jinja, 'utf8'), { bos: this.bosToken, eos: this.eosToken })
        : null)
    // EOS from config.json, generation_config.json and the tokenizer's own eos token, deduplicated.
    const generation = existsSync(join(dir, 'generation_config.json'))
      ? readJson(join(dir, 'generation_config.json'), 'generation_config.json')
      : {}
    const genEos = generation.eos_token_id
    const ids = new Set<number>(configEos)
    for (const id of Array.isArray(genEos) ? genEos : genEos === undefined ? [] : [genEos]) ids.add(Number(id))
    if (this.eosToken) {
      const id = this.tokenId(this.eosToken)
      if (id !== undefined) ids.add(id)
    }
    this.eosTokenIds = [...ids]
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.#tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return ''
    return this.#tokenizer.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false })
  }

  tokenId(token: string): number | undefined {
    const ids = this.#tokenizer.encode(token, { add_special_tokens: false }).ids
    return ids.length === 1 ? ids[0] : undefined
  }

  get hasChatTemplate(): boolean {
    return this.#template !== null
  }

  /** The chat template's Jinja text (null without one): what tells the model's tool-call format. */
  get chatTemplateSource(): string | null {
    return this.#template?.source ?? null
  }

  /** Renders messages with the model's chat template, ending with the assistant prompt. */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.#template)
      throw new CheckpointError(
        'E_NO_TEMPLATE',
        'this model has no chat_template in tokenizer_config.json',
        'use a raw prompt instead',
      )
    return this.#template.render(messages, options)
  }
}
