/** `dbcluster generate`: text from a model folder on this machine, streamed to stdout. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { readFileSync } from 'node:fs'
import { UsageError } from '../errors.ts'
import { generate } from '../engine/generate.ts'
import { LocalPipeline } from '../engine/pipeline.ts'
import { followTensorParallel, TensorParallelPipeline } from '../tensor-parallel/pipeline.ts'
import { samplingParams } from '../model/sampler.ts'
import { ModelStage } from '../model/shard.ts'
import { ModelTokenizer, type ChatMessage } from '../model/tokenizer.ts'
import { parseBackendChoice, selectBackend } from '../tensor/select-backend.ts'
import { startTensorParallel } from '../tensor-parallel/start-mlx.ts'

export default defineCommand({
  meta: { name: 'generate', description: 'Generate text from a model folder (MLX-community layout) on this machine' },
  args: {
    model: { type: 'string', description: 'Model folder', required: true, valueHint: 'DIR' },
    prompt: { type: 'string', description: 'Raw prompt text (no chat template)' },
    chat: { type: 'string', description: 'One user message, rendered with the chat template' },
    messages: {
      type: 'string',
      description: 'JSON file with [{role, content}, …], rendered with the chat template',
      valueHint: 'FILE',
    },
    'max-tokens': { type: 'string', description: 'Most tokens to generate', default: '128' },
    temperature: { type: 'string', description: 'Sampling temperature (0 = greedy)', default: '0' },
    'top-p': { type: 'string', description: 'Nucleus sampling mass', default: '1' },
    'top-k': { type: 'string', description: 'Keep the k most likely tokens (0 = all)', default: '0' },
    'min-p': { type: 'string', description: 'Drop tokens below this fraction of the top probability', default: '0' },
    'repetition-penalty': { type: 'string', description: 'Penalty for recently seen tokens (1 = none)', default: '1' },
    seed: { type: 'string', description: 'Sampling seed (same seed, same output)' },
    stop: { type: 'string', description: 'Stop string (repeat the flag for more)' },
    'max-context': { type: 'string', description: 'Tokens of KV cache for the sequence', default: '4096' },
    backend: { type: 'string', description: 'Compute backend: cpu, mlx or auto', default: 'auto' },
    threads: { type: 'string', description: 'CPU threads (default: all cores)', valueHint: 'N' },
    json: {
      type: 'boolean',
      description:
        'Print {text, tokens, prompt_tokens, completion_tokens, prefill_tps, decode_tps} instead of streaming',
      default: false,
    },
    tp: {
      type: 'string',
      description:
        'Tensor parallel over MLX distributed (opt-in, NOT encrypted): number of ranks; rank 0 takes the prompt and prints, ranks > 0 need the same --model and --max-context and replay its steps',
      default: '1',
      valueHint: 'N',
    },
    rank: {
      type: 'string',
      description: "With --tp: this process's rank (0 listens, the others dial it with --peer)",
      default: '0',
      valueHint: 'R',
    },
    peer: { type: 'string', description: "With --tp, ranks > 0: rank 0's HOST:PORT", valueHint: 'HOST:PORT' },
    listen: {
      type: 'string',
      description:
        "With --tp, rank 0: where the ranks meet (loopback by default: give the cable's address for other machines)",
      default: '127.0.0.1:47200',
      valueHint: 'HOST:PORT',
    },
    transport: {
      type: 'string',
      description:
        'With --tp: jaccl (Thunderbolt RDMA, macOS) or ring (TCP); auto picks jaccl where the RDMA gate passes',
      default: 'auto',
      valueHint: 'auto|jaccl|ring',
    },
    'rdma-device': {
      type: 'string',
      description: "With --tp over jaccl: this rank's RDMA device, or one per rank with - for this rank",
      valueHint: 'NAME|LIST',
    },
    'timeout-s': {
      type: 'string',
      description: 'With --tp: how long to wait for the other ranks',
      default: '60',
      valueHint: 'S',
    },
  },
  async run({ args }) {
    const num = (v: string | undefined, name: string) => {
      const n = Number(v)
      if (v === undefined || Number.isNaN(n)) throw new UsageError(`--${name} must be a number, got '${v}'`)
      return n
    }
    const tpSize = num(args.tp, 'tp')
    const rank = num(args.rank, 'rank')
    if (!Number.isInteger(tpSize) || tpSize < 1)
      throw new UsageError(`--tp must be a positive integer, got '${args.tp}'`)
    if (!Number.isInteger(rank) || rank < 0 || rank >= tpSize)
      throw new UsageError(
        `--rank ${args.rank} is not in 0..${tpSize - 1}`,
        'give each process of a --tp N run its own rank below N',
      )
    // with --tp, ranks > 0 replay rank 0's steps: they need the model, not a prompt
    const follower = tpSize > 1 && rank > 0
    const sources = [args.prompt, args.chat, args.messages].filter((v) => v !== undefined)
    if (!follower && sources.length !== 1) throw new UsageError('give exactly one of --prompt, --chat or --messages')
    const choice = parseBackendChoice(args.backend)
    if (tpSize > 1 && choice === 'cpu')
      throw new UsageError(
        '--tp runs over MLX distributed and needs the mlx backend',
        'use --backend mlx (or auto), or pipeline parallel with serve',
      )
    const { backend, reason } = selectBackend(tpSize > 1 ? 'mlx' : choice, {
      threads: args.threads ? num(args.threads, 'threads') : undefined,
    })
    // --json: stdout carries the one JSON object only
    const log = (line: string) => (args.json ? console.error(line) : consola.info(line))
    log(reason)
    const { group, tp } =
      tpSize > 1
        ? await startTensorParallel(
            {
              size: tpSize,
              rank,
              transport: args.transport,
              listen: args.listen,
              peer: args.peer,
              rdmaDevice: args['rdma-device'],
              timeoutMs: num(args['timeout-s'], 'timeout-s') * 1000,
              log,
            },
            backend,
          )
        : { group: undefined, tp: undefined }
    const stage = ModelStage.load(args.model, backend, {
      slots: 1,
      maxLen: num(args['max-context'], 'max-context'),
      tp,
    })
    if (follower) {
      const steps = followTensorParallel(stage, group!)
      if (args.json) console.log(JSON.stringify({ rank, followed_steps: steps }))
      else log(`rank ${rank}: replayed ${steps} steps of rank 0; rank 0 printed the text`)
      group!.close()
      return
    }
    const pipeline = group ? new TensorParallelPipeline(stage, group) : new LocalPipeline([stage])
    try {
      const tokenizer = new ModelTokenizer(args.model, stage.config.eosTokenIds)
      let text: string
      if (args.prompt !== undefined) text = args.prompt
      else {
        const messages: ChatMessage[] =
          args.chat !== undefined ? [{ role: 'user', content: args.chat }] : readMessages(args.messages!)
        text = tokenizer.applyChatTemplate(messages)
      }
      let sampling
      try {
        sampling = samplingParams({
          temperature: num(args.temperature, 'temperature'),
          topP: num(args['top-p'], 'top-p'),
          topK: num(args['top-k'], 'top-k'),
          minP: num(args['min-p'], 'min-p'),
          repetitionPenalty: num(args['repetition-penalty'], 'repetition-penalty'),
          seed: args.seed !== undefined ? num(args.seed, 'seed') : undefined,
        })
      } catch (error) {
        throw new UsageError((error as Error).message)
      }
      const stops = args.stop === undefined ? [] : Array.isArray(args.stop) ? (args.stop as string[]) : [args.stop]
      const events = generate(
        pipeline,
        {
          promptIds: tokenizer.encode(text),
          maxTokens: num(args['max-tokens'], 'max-tokens'),
          sampling,
          stop: stops,
          eosTokenIds: tokenizer.eosTokenIds,
        },
        (ids) => tokenizer.decode(ids),
      )
      for await (const event of events) {
        if (event.type !== 'done') {
          if (!args.json) process.stdout.write(event.text)
          continue
        }
        const prefillTps = event.promptTokens / event.prefillSeconds
        const decodeTps = event.tokens.length / Math.max(event.decodeSeconds, 1e-9)
        if (args.json) {
          console.log(
            JSON.stringify({
              text: event.text,
              tokens: event.tokens,
              prompt_tokens: event.promptTokens,
              completion_tokens: event.tokens.length,
              finish_reason: event.finishReason,
              prefill_tps: round(prefillTps),
              decode_tps: round(decodeTps),
            }),
          )
        } else {
          process.stdout.write('\n')
          consola.info(
            `prompt ${event.promptTokens} tokens at ${round(prefillTps)} tok/s; ${event.tokens.length} tokens at ${round(decodeTps)} tok/s (${event.finishReason})`,
          )
        }
      }
    } finally {
      // the followers return (also when this rank failed, so they do not wait forever)
      if (pipeline instanceof TensorParallelPipeline) pipeline.stop()
    }
    group?.close()
  },
})

/** A --messages file: a JSON array of {role, content}, as in the OpenAI API. */
function readMessages(file: string): ChatMessage[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'))
  } catch (error) {
    throw new UsageError(
      `--messages ${file}: ${(error as Error).message}`,
      'give a JSON file with [{"role": "user", "content": "…"}]',
    )
  }
  const roles = ['system', 'user', 'assistant', 'tool']
  if (
    !Array.isArray(parsed) ||
    parsed.length === 0 ||
    !parsed.every((m) => m && roles.includes(m.role) && typeof m.content === 'string')
  ) {
    throw new UsageError(
      `--messages ${file} must hold a non-empty array of {role, content}`,
      `roles: ${roles.join(', ')}`,
    )
  }
  return parsed as ChatMessage[]
}

const round = (v: number) => Math.round(v * 100) / 100
