/** `dbcluster generate`: text from a model folder on this machine, streamed to stdout. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { readFileSync } from 'node:fs'
import { DbcError, UsageError } from '../errors.ts'
import { ServingMetrics } from '../engine/metrics.ts'
import { Scheduler, type RequestEvent } from '../engine/scheduler.ts'
import { samplingParams } from '../model/sampler.ts'
import { ModelTokenizer, type ChatMessage } from '../model/tokenizer.ts'
import { parseBackendChoice, parsePrecision, selectBackend } from '../tensor/select-backend.ts'
import { startNode } from '../node/start-node.ts'
import { machineSerial } from '../trust/machine-info.ts'

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
    precision: {
      type: 'string',
      description:
        'cpu backend, 4- and 8-bit weights: fast rounds activations to int8 per group (integer dot products, the default), exact keeps them in float (slower; as faithful as the weights allow; docs/backends.md §Precision)',
      default: 'fast',
      valueHint: 'fast|exact',
    },
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
    const transport = args.transport
    if (transport !== 'auto' && transport !== 'jaccl' && transport !== 'ring')
      throw new UsageError(`unknown --transport '${transport}'`, 'tensor parallel runs over auto, jaccl or ring')
    const { backend, reason } = selectBackend(tpSize > 1 ? 'mlx' : choice, {
      threads: args.threads ? num(args.threads, 'threads') : undefined,
      precision: parsePrecision(args.precision),
    })
    // --json: stdout carries the one JSON object only
    const log = (line: string) => (args.json ? console.error(line) : consola.info(line))
    log(reason)
    const maxLen = num(args['max-context'], 'max-context')
    const started = await startNode({
      modelDir: args.model,
      modelSpec: args.model,
      serial: machineSerial(),
      backend,
      maxBatch: 1,
      maxLen,
      usableBytes: 0, // no plan: the model loads as it is
      plan: false,
      membership: null,
      tensorParallel:
        tpSize > 1
          ? {
              size: tpSize,
              rank,
              transport,
              listen: args.listen,
              peer: args.peer,
              rdmaDevice: args['rdma-device'],
              timeoutMs: num(args['timeout-s'], 'timeout-s') * 1000,
              log,
            }
          : null,
      metrics: new ServingMetrics(),
      signal: new AbortController().signal,
    })
    if (started.role === 'finished') {
      if (args.json) console.log(JSON.stringify({ rank, followed_steps: started.followedSteps }))
      else log(`rank ${rank}: replayed ${started.followedSteps} steps of rank 0; rank 0 printed the text`)
      return
    }
    const { node } = started
    try {
      const tokenizer = new ModelTokenizer(args.model, node.stage.config.eosTokenIds)
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
      const stop = args.stop === undefined ? [] : Array.isArray(args.stop) ? (args.stop as string[]) : [args.stop]
      const promptIds = tokenizer.encode(text)
      if (promptIds.length === 0) throw new DbcError('E_PROMPT', 'the prompt is empty')
      if (promptIds.length + 1 > maxLen)
        throw new DbcError(
          'E_CONTEXT',
          `the prompt has ${promptIds.length} tokens; the context holds ${maxLen}`,
          'shorten the prompt or raise --max-context',
        )
      // the context ends the text as the token limit would (finish_reason length)
      const maxTokens = Math.min(num(args['max-tokens'], 'max-tokens'), maxLen - promptIds.length)
      // one request through the same scheduler serve uses, with no deadline: a long text on a big model takes its time
      const scheduler = new Scheduler(node.pipeline, (ids) => tokenizer.decode(ids), {
        maxBatch: 1,
        maxQueue: 1,
        prefillChunk: 512,
        requestTimeoutMs: Infinity,
      })
      const t0 = performance.now()
      let t1: number | null = null
      const done = await new Promise<Extract<RequestEvent, { type: 'done' }>>((resolve, reject) => {
        scheduler.submit({ promptIds, maxTokens, sampling, stop, eosTokenIds: tokenizer.eosTokenIds }, (event) => {
          if (event.type === 'token' || event.type === 'text') {
            if (event.type === 'token') t1 ??= performance.now()
            if (!args.json) process.stdout.write(event.text)
          } else if (event.type === 'error') reject(event.error)
          else resolve(event)
        })
      })
      const end = performance.now()
      const prefillTps = done.promptTokens / (((t1 ?? end) - t0) / 1000)
      const decodeTps = done.tokens.length / Math.max((end - (t1 ?? end)) / 1000, 1e-9)
      if (args.json) {
        const result = {
          text: done.text,
          tokens: done.tokens,
          prompt_tokens: done.promptTokens,
          completion_tokens: done.tokens.length,
        }
        console.log(
          JSON.stringify({
            ...result,
            finish_reason: done.finishReason,
            prefill_tps: round(prefillTps),
            decode_tps: round(decodeTps),
          }),
        )
      } else {
        process.stdout.write('\n')
        consola.info(
          `prompt ${done.promptTokens} tokens at ${round(prefillTps)} tok/s; ${done.tokens.length} tokens at ${round(decodeTps)} tok/s (${done.finishReason})`,
        )
      }
    } finally {
      // tensor parallel: the followers return (also when this rank failed, so they do not wait forever)
      node.close()
    }
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
