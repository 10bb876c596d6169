/** `dbcluster bench serve`: generated tok/s, TTFT and inter-token latency at each concurrency level, against a running
 * server (--url) or one this command starts and stops (--model, one process or an N-node cluster on this machine). */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { runSharedPrefix } from './bench-shared-prefix.ts'
import { measureBackgroundPrompt, type BackgroundPromptLevel } from '../bench/background-prompt.ts'
import { pinningUnavailable } from '../bench/pin-cores.ts'
import { runServeSweep, servedModel, type ServeSweepResult } from '../bench/serve-sweep.ts'
import { startServeTarget, type ServeTarget } from '../bench/serve-target.ts'
import { levelsTable } from '../bench/sweep-report.ts'
import { benchTargetArgs } from '../bench/sweep.ts'
import { DbcError, InterruptedError, UsageError } from '../errors.ts'
import { interruptOnSignals } from './interrupt-signal.ts'
import { positiveInt, positiveIntList } from './number-list.ts'
import { progressLine } from './progress-line.ts'

/** Options shared with `bench sweep` (same names, same meaning). */
export const loadArgs = {
  concurrency: {
    type: 'string',
    description: 'Comma-separated concurrency levels (simultaneous streaming clients)',
    default: '1,2,4,8,16,32',
  },
  'max-tokens': { type: 'string', description: 'Tokens generated per request', default: '128' },
  'requests-per-level': {
    type: 'string',
    description:
      'Requests per concurrency level, spread evenly over its clients (at least one each; default: 2 per client)',
    valueHint: 'K',
  },
  threads: { type: 'string', description: 'CPU threads of each server process this command starts', default: '1' },
  pin: {
    type: 'boolean',
    description:
      'Pin each server process this command starts to cores of its own (Linux, taskset); --no-pin lets them share',
    default: true,
  },
  backend: {
    type: 'string',
    description: 'Compute backend of the servers this command starts (cpu, mlx or auto)',
    default: 'cpu',
  },
  parallel: {
    type: 'string',
    description:
      'How a cluster this command starts (N ≥ 2 nodes) splits the model: pipeline (layers across the nodes) or tensor (every layer across the nodes, sealed tensor parallel)',
    default: 'pipeline',
    valueHint: 'pipeline|tensor',
  },
} as const

/** The step budget for the servers this command starts (null: theirs by default). */
function withStepBudget<T extends { extraArgs: string[] }>(target: T, stepTokens: number | null): T {
  return stepTokens === null
    ? target
    : { ...target, extraArgs: [...target.extraArgs, '--max-step-tokens', String(stepTokens)] }
}

export function parseParallel(value: string): 'pipeline' | 'tensor' {
  if (value !== 'pipeline' && value !== 'tensor')
    throw new UsageError(`--parallel must be pipeline or tensor, got '${value}'`)
  return value
}

/** Whether to pin, saying why not when pinning was asked for but cannot be done. */
export function decidePinning(wanted: boolean, processes: number, threads: number, quiet: boolean): boolean {
  if (!wanted) return false
  const why = pinningUnavailable(processes, threads)
  if (why && !quiet) consola.warn(why)
  return why === null
}

export default defineCommand({
  meta: {
    name: 'serve',
    description:
      'Aggregate generated tok/s, TTFT and inter-token latency (p50/p95) per concurrency level, against --url or a server started from --model',
  },
  args: {
    url: {
      type: 'string',
      description: 'Benchmark a running server (its base URL, e.g. http://127.0.0.1:8080)',
      valueHint: 'URL',
    },
    model: {
      type: 'string',
      description: 'Start a server for this model folder, benchmark it, stop it',
      valueHint: 'DIR',
    },
    nodes: {
      type: 'string',
      description:
        'With --model: 1 = one process; N ≥ 2 = an N-node cluster on this machine over sealed loopback links',
      default: '1',
    },
    'prompt-tokens': { type: 'string', description: 'Prompt length in tokens (random token ids)', default: '128' },
    ...loadArgs,
    'background-prompt': {
      type: 'string',
      description:
        'Instead of the throughput sweep: at each concurrency level, the inter-token latency p99 of the running streams while one prompt of this many tokens arrives, against their p99 without it (goal ≤ 2×)',
      valueHint: 'N',
    },
    'shared-prefix': {
      type: 'string',
      description:
        'Instead of the throughput sweep: multi-turn conversations whose first prompt has this many tokens, each turn extending the last; TTFT per turn with and without the prefix cache (--model starts a server of each), goal turn 2 ≤ 0.15× turn 1',
      valueHint: 'N',
    },
    turns: { type: 'string', description: 'With --shared-prefix: turns per conversation', default: '4' },
    'turn-tokens': { type: 'string', description: 'With --shared-prefix: tokens each later turn adds', default: '32' },
    conversations: {
      type: 'string',
      description: 'With --shared-prefix: conversations replayed (TTFTs are their medians)',
      default: '3',
    },
    'max-step-tokens': {
      type: 'string',
      description: 'With --model: the servers’ step budget (serve --max-step-tokens), decoding rows and prompt chunks',
      valueHint: 'N',
    },
    'api-key': { type: 'string', description: 'With --url: bearer key of the server (or set DBCLUSTER_API_KEY)' },
    json: {
      type: 'boolean',
      description:
        'Print one JSON object {url, model, prompt_tokens, max_tokens, target, partial, levels: [{concurrency, tok_s, ttft_p50_ms, ttft_p95_ms, itl_p50_ms, itl_p95_ms, ok, failed, …}]}; with --background-prompt, levels: [{concurrency, itl_p99_quiet_ms, itl_p99_background_ms, itl_p99_ratio, background_gaps, background_ttft_ms}]',
      default: false,
    },
  },
  async run({ args }) {
    if (!args.url === !args.model)
      throw new UsageError(
        'give exactly one of --url URL or --model DIR',
        'e.g. dbcluster bench serve --model ~/.dbcluster/models/demo --nodes 2',
      )
    const concurrency = positiveIntList(args.concurrency, 'concurrency')
    const promptTokens = positiveInt(args['prompt-tokens'], 'prompt-tokens')
    const maxTokens = positiveInt(args['max-tokens'], 'max-tokens')
    const requestsPerLevel =
      args['requests-per-level'] !== undefined
        ? positiveInt(args['requests-per-level'], 'requests-per-level')
        : undefined
    const nodes = positiveInt(args.nodes, 'nodes')
    const threads = positiveInt(args.threads, 'threads')
    const parallel = parseParallel(args.parallel)
    const background = args['background-prompt'] ? positiveInt(args['background-prompt'], 'background-prompt') : null
    const stepTokens = args['max-step-tokens'] ? positiveInt(args['max-step-tokens'], 'max-step-tokens') : null
    if (args.url && stepTokens !== null)
      throw new UsageError('--max-step-tokens applies to --model only', 'a running server keeps its own budget')
    if (args.url && nodes !== 1)
      throw new UsageError('--nodes applies to --model only', 'with --url the running server is measured as it is')

    const interrupt = interruptOnSignals()
    if (args['shared-prefix']) {
      try {
        return await runSharedPrefix({
          url: args.url?.replace(/\/+$/, ''),
          target: args.model
            ? {
                model: args.model,
                nodes,
                threads,
                pinCores: decidePinning(args.pin, nodes, threads, args.json),
                backend: args.backend,
                parallel,
                extraArgs: stepTokens === null ? [] : ['--max-step-tokens', String(stepTokens)],
              }
            : undefined,
          prefixTokens: positiveInt(args['shared-prefix'], 'shared-prefix'),
          turns: positiveInt(args.turns, 'turns'),
          turnTokens: positiveInt(args['turn-tokens'], 'turn-tokens'),
          conversations: positiveInt(args.conversations, 'conversations'),
          maxTokens,
          apiKey: args['api-key'] ?? process.env.DBCLUSTER_API_KEY,
          signal: interrupt.signal,
          json: args.json,
        })
      } finally {
        interrupt.dispose()
      }
    }
    const line = progressLine({ enabled: !args.json })
    let target: ServeTarget | null = null
    let result: ServeSweepResult
    try {
      if (args.model) {
        const pinCores = decidePinning(args.pin, nodes, threads, args.json)
        if (!args.json)
          consola.start(`starting ${nodes === 1 ? 'one process' : `a ${nodes}-node cluster`} for ${args.model}`)
        target = await startServeTarget({
          model: args.model,
          nodes,
          threads,
          pinCores,
          backend: args.backend,
          parallel,
          ...withStepBudget(
            // the long prompt needs a slot of its own beside the streams
            benchTargetArgs(
              Math.max(...concurrency) + (background === null ? 0 : 1),
              Math.max(promptTokens, background ?? 0),
              maxTokens,
            ),
            stepTokens,
          ),
        })
        if (!args.json) consola.info(`serving on ${target.url} (${target.label})`)
      }
      const url = (args.url ?? target!.url).replace(/\/+$/, '')
      if (background !== null) {
        const apiKey = args['api-key'] ?? process.env.DBCLUSTER_API_KEY
        const model = await servedModel(url, apiKey)
        const levels: BackgroundPromptLevel[] = []
        for (const c of concurrency) {
          if (interrupt.signal.aborted) break
          line.update(`concurrency ${c}: ${c} streams alone, then beside a ${background}-token prompt`)
          const o = { url, model, concurrency: c, promptTokens, maxTokens, backgroundTokens: background }
          const level = await measureBackgroundPrompt({ ...o, apiKey, signal: interrupt.signal })
          line.done()
          if (!args.json)
            consola.success(
              `concurrency ${c}: ITL p99 ${level.itl_p99_quiet_ms} ms alone, ${level.itl_p99_background_ms} ms beside the prompt (×${level.itl_p99_ratio}); its TTFT ${level.background_ttft_ms} ms`,
            )
          levels.push(level)
        }
        const out = { url, model, background_prompt_tokens: background, max_step_tokens: stepTokens, levels }
        if (args.json) console.log(JSON.stringify({ ...out, target: target?.label ?? null }))
        return
      }
      result = await runServeSweep({
        url,
        concurrency,
        promptTokens,
        maxTokens,
        requestsPerLevel,
        apiKey: args['api-key'] ?? process.env.DBCLUSTER_API_KEY,
        signal: interrupt.signal,
        onProgress: (p) =>
          line.update(
            `concurrency ${p.concurrency}: ${p.done}/${p.total} requests${p.failed ? ` (${p.failed} failed)` : ''}${p.previousTps !== null ? ` — previous level ${p.previousTps} tok/s` : ''}`,
          ),
        onLevel: (l) => {
          line.done()
          if (!args.json)
            consola.success(
              `concurrency ${l.concurrency}: ${l.tok_s} tok/s, TTFT p50 ${l.ttft_p50_ms ?? 'n/a'} ms, ${l.ok} ok, ${l.failed} failed`,
            )
        },
      })
    } catch (error) {
      // a terminal's Ctrl-C reaches the servers too, so what fails after an interrupt is the interrupt's doing
      if (interrupt.received)
        throw new InterruptedError(`interrupted (${interrupt.received}) before the levels finished`)
      throw new DbcError(
        'E_BENCH',
        (error as Error).message,
        args.url
          ? 'is a dbcluster (or OpenAI-compatible) server running there?'
          : 'run `dbcluster serve --model DIR` by hand to see why it does not start',
      )
    } finally {
      line.done()
      interrupt.dispose()
      await target?.stop()
    }
    const output = { ...result, target: target?.label ?? null }
    if (args.json) console.log(JSON.stringify(output))
    else console.log(levelsTable(result.levels))
    if (interrupt.received)
      throw new InterruptedError(
        `interrupted (${interrupt.received}): ${result.levels.length} of ${concurrency.length} levels measured`,
        'the table above has the finished levels',
      )
  },
})
