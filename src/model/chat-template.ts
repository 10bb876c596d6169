/** The model's chat template (tokenizer_config.json `chat_template`, a Jinja string) rendered through @huggingface/jinja,
 * with the variables Hugging Face passes: messages (with `tool_calls` and `tool_call_id` as transformers passes them),
 * `tools` (OpenAI function definitions, only when given), add_generation_prompt, bos/eos tokens, and Qwen3's
 * enable_thinking. */
import { Template } from '@huggingface/jinja'
import { CheckpointError } from './errors.ts'

/** An assistant's earlier call as templates read it: `arguments` an object (transformers' convention; templates apply
 * `tojson` or iterate its items), never the JSON text OpenAI clients send. */
export interface ChatToolCall {
  id: string
  type: 'function'
  function: { name: string; arguments: Record<string, unknown> }
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool'
  content: string
  /** assistant: the calls it made (absent when none: some templates test `'tool_calls' in message`) */
  tool_calls?: ChatToolCall[]
  /** tool: the call this result answers, and that call's function name */
  tool_call_id?: string
  name?: string
}

/** An OpenAI function tool, `{type: 'function', function: {name, description?, parameters?}}`, as templates expect. */
export interface ChatTool {
  type: 'function'
  function: { name: string; description?: string; parameters?: Record<string, unknown> }
}

export interface ChatTemplateOptions {
  /** End with the assistant's turn header so the model answers (default true). */
  addGenerationPrompt?: boolean
  /** Qwen3: false renders an empty think block, so the model answers directly (default false). */
  enableThinking?: boolean
  /** Function tools offered to the model (passed as `tools` only when present). */
  tools?: readonly ChatTool[]
}

export class ChatTemplate {
  readonly #template: Template

  constructor(
    /** The Jinja text, read to tell which tool-call format the model was trained on (src/api/tool-calls/). */
    readonly source: string,
    private readonly specialTokens: { bos: string | null; eos: string | null } = { bos: null, eos: null },
  ) {
    try {
      this.#template = new Template(source)
    } catch (error) {
      throw new CheckpointError(
        'E_CHAT_TEMPLATE',
        `the chat template does not parse: ${(error as Error).message}`,
        'fix chat_template in tokenizer_config.json',
      )
    }
  }

  /** A template from a tokenizer_config.json object, or null when it has none. HF also allows a list of named templates. */
  static fromTokenizerConfig(
    config: Record<string, unknown>,
    specialTokens: { bos: string | null; eos: string | null },
  ): ChatTemplate | null {
    let source = config.chat_template
    if (Array.isArray(source))
      source = (source as { name?: string; template?: string }[]).find((t) => t.name === 'default')?.template
    return typeof source === 'string' ? new ChatTemplate(source, specialTokens) : null
  }

  render(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    for (const [i, m] of messages.entries()) {
      if (!m || typeof m !== 'object' || typeof m.role !== 'string' || typeof m.content !== 'string') {
        throw new CheckpointError(
          'E_CHAT_MESSAGES',
          `message ${i} must be {role, content} with string values`,
          'check the messages file',
        )
      }
    }
    return this.#template.render({
      messages,
      ...(options.tools ? { tools: options.tools } : {}),
      add_generation_prompt: options.addGenerationPrompt ?? true,
      enable_thinking: options.enableThinking ?? false,
      bos_token: this.specialTokens.bos ?? '',
      eos_token: this.specialTokens.eos ?? '',
    })
  }
}
