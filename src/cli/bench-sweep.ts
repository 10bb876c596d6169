/** `dbcluster bench sweep`: `bench serve` over node counts × prompt lengths, written as results.json, results.md and
 * chart.svg; the files are rewritten after every measured level, so Ctrl-C (or a failure) keeps what was measured. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { sweepChart, sweepMarkdown } from '../bench/sweep-report.ts'
import { emptySweepResults, runSweep, seriesLabel, type SweepOptions, type SweepResults } from '../bench/sweep.ts'
import { DbcError, InterruptedError } from '../errors.ts'
import { decidePinning, loadArgs, parseParallel } from './bench-serve.ts'
import { interruptOnSignals } from './interrupt-signal.ts'
import { positiveInt, positiveIntList } from './number-list.ts'
import { progressLine } from './progress-line.ts'

function writeResults(dir: string, results: SweepResults): void {
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(results, null, 2)}\n`)
  writeFileSync(join(dir, 'results.md'), sweepMarkdown(results))
  writeFileSync(join(dir, 'chart.svg'), sweepChart(results))
}

const timestamp = () => new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)

export default defineCommand({
  meta: {
    name: 'sweep',
    description:
      'Run bench serve for each node count × prompt length on this machine; write results.json, results.md and chart.svg (Ctrl-C stops and keeps what was measured)',
  },
  args: {
    model: { type: 'string', description: 'Model folder', required: true, valueHint: 'DIR' },
    nodes: {
      type: 'string',
      description:
        'Comma-separated node counts (1 = one process; N ≥ 2 = an N-node cluster over sealed loopback links)',
      default: '1,2',
    },
    'prompt-tokens': { type: 'string', description: 'Comma-separated prompt lengths in tokens', default: '128,1024' },
    repeat: {
      type: 'string',
      description:
        'Measure every point this many times, the node counts taking turns with all servers up (medians, and each node count against one process run by run)',
      default: '1',
      valueHint: 'R',
    },
    ...loadArgs,
    out: {
      type: 'string',
      description: 'Folder for results.json, results.md and chart.svg (default: bench-sweep-<date>-<time>)',
      valueHint: 'DIR',
    },
  },
  async run({ args }) {
    const threads = positiveInt(args.threads, 'threads')
    const nodes = positiveIntList(args.nodes, 'nodes')
    const options: SweepOptions = {
      model: args.model,
      nodes,
      concurrency: positiveIntList(args.concurrency, 'concurrency'),
      promptTokens: positiveIntList(args['prompt-tokens'], 'prompt-tokens'),
      maxTokens: positiveInt(args['max-tokens'], 'max-tokens'),
      requestsPerLevel:
        args['requests-per-level'] !== undefined
          ? positiveInt(args['requests-per-level'], 'requests-per-level')
          : undefined,
      repeats: positiveInt(args.repeat, 'repeat'),
      threads,
      pinCores: decidePinning(args.pin, Math.max(...nodes), threads, false),
      backend: args.backend,
      parallel: parseParallel(args.parallel),
    }
    const dir = resolve(args.out ?? `bench-sweep-${timestamp()}`)
    mkdirSync(dir, { recursive: true })
    const planned = nodes.length * options.promptTokens.length * options.concurrency.length * options.repeats!
    const measured = (r: SweepResults) =>
      r.series.reduce((n, s) => n + (s.runs ? s.runs.reduce((k, run) => k + run.length, 0) : s.levels.length), 0)
    const results = emptySweepResults(options)
    writeResults(dir, results)

    const line = progressLine({ enabled: true })
    const interrupt = interruptOnSignals((name) => {
      line.done()
      consola.warn(`${name}: stopping — finishing nothing new, stopping the servers this sweep started`)
    })
    consola.info(`sweep of ${planned} points; results in ${dir}`)
    try {
      await runSweep(
        {
          ...options,
          signal: interrupt.signal,
          onTarget: (label) => {
            line.done()
            consola.start(`starting ${label}`)
          },
          onProgress: (series, p) =>
            line.update(
              `[${measured(results) + 1}/${planned}] ${seriesLabel(series)}, concurrency ${p.concurrency}: ${p.done}/${p.total} requests${p.failed ? ` (${p.failed} failed)` : ''}`,
            ),
          onUpdate: (r, series, level) => {
            line.done()
            consola.success(
              `[${measured(r)}/${planned}] ${seriesLabel(series)}, concurrency ${level.concurrency}: ${level.tok_s} tok/s, TTFT p50 ${level.ttft_p50_ms ?? 'n/a'} ms${level.failed ? `, ${level.failed} failed` : ''}`,
            )
            writeResults(dir, r)
          },
        },
        results,
      )
    } catch (error) {
      line.done()
      // a terminal's Ctrl-C reaches the servers too, so what fails after an interrupt is the interrupt's doing
      if (!interrupt.received) {
        results.stopped_reason = `failed: ${(error as Error).message}`
        results.partial = true
        writeResults(dir, results)
        throw new DbcError(
          'E_BENCH',
          `the sweep failed after ${measured(results)} of ${planned} points: ${(error as Error).message}`,
          `what was measured is in ${dir}`,
        )
      }
    } finally {
      line.done()
      interrupt.dispose()
    }
    if (interrupt.received) {
      results.partial = true
      results.stopped_reason = `interrupted (${interrupt.received}) after ${measured(results)} of ${planned} points`
      writeResults(dir, results)
      throw new InterruptedError(
        `interrupted: ${measured(results)} of ${planned} points measured; partial results in ${dir} (results.json, results.md, chart.svg)`,
      )
    }
    writeResults(dir, results)
    console.log(sweepMarkdown(results))
    consola.success(`results in ${dir}: results.json, results.md, chart.svg`)
  },
})
