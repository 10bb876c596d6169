/** `dbcluster bench decode`: prefill/decode tok/s and the decode roofline ratio of a model on this machine. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { runClusterDecodeBench } from '../bench/cluster-decode.ts'
import { runConstrainedDecodeBench } from '../bench/constrained-decode.ts'
import { runDecodeBench } from '../bench/decode.ts'
import { UsageError } from '../errors.ts'
import { QWEN3_0_6B_SHAPE, synthesizeModel, type SynthDtype } from '../model/synth.ts'
import { parseBackendChoice, parsePrecision, selectBackend } from '../tensor/select-backend.ts'

export default defineCommand({
  meta: {
    name: 'decode',
    description:
      'Prefill and decode tok/s at batch 1 and 8 with the roofline ratio; with --nodes N, batch-1 decode through an N-node cluster on this machine against one process',
  },
  args: {
    model: { type: 'string', description: 'Model folder (or use --synth)', valueHint: 'DIR' },
    synth: {
      type: 'string',
      description:
        'Use a synthetic model with Qwen3-0.6B shapes in this dtype (q4, q8, bf16, f32), created on first use',
      valueHint: 'DTYPE',
    },
    batch: { type: 'string', description: 'Comma-separated batch sizes', default: '1,8' },
    'prompt-tokens': { type: 'string', description: 'Prompt length for the prefill measurement', default: '128' },
    steps: { type: 'string', description: 'Decode steps per batch size', default: '24' },
    'kv-dtype': {
      type: 'string',
      description: "KV cache dtype: f16 or f32 (default: the backend's, f16 on cpu and f32 on mlx)",
      valueHint: 'f16|f32',
    },
    backend: { type: 'string', description: 'Compute backend: cpu, mlx or auto', default: 'auto' },
    precision: {
      type: 'string',
      description:
        'cpu backend, 4- and 8-bit weights: fast rounds activations to int8 per group (the default), exact keeps them in float',
      default: 'fast',
      valueHint: 'fast|exact',
    },
    threads: { type: 'string', description: 'CPU threads (default: all cores)', valueHint: 'N' },
    nodes: {
      type: 'string',
      description:
        'Run the model as a cluster of N nodes on this machine (one thread each, sealed loopback links) and compare with one process',
      valueHint: 'N',
    },
    runs: {
      type: 'string',
      description: 'With --nodes: decode runs per configuration (the median is reported)',
      default: '3',
    },
    'max-tokens': { type: 'string', description: 'With --nodes: tokens decoded per run', default: '64' },
    constrained: {
      type: 'string',
      description:
        "Decode under this JSON Schema's grammar mask and without it in the same run (steps alternating): tok/s of both, their ratio, and the mask's and sampling's cost per token",
      valueHint: 'SCHEMA.json',
    },
    json: {
      type: 'boolean',
      description: 'Print one JSON object with decode_tps, prefill_tps and roofline_ratio per batch size',
      default: false,
    },
  },
  async run({ args }) {
    if (!args.model === !args.synth) throw new UsageError('give exactly one of --model DIR or --synth DTYPE')
    const batches = args.batch.split(',').map(Number)
    if (batches.some((b) => !Number.isInteger(b) || b < 1)) throw new UsageError(`bad --batch '${args.batch}'`)
    let dir = args.model
    if (args.synth) {
      const dtype = args.synth as SynthDtype
      if (!['q4', 'q8', 'bf16', 'f32'].includes(dtype))
        throw new UsageError(`unknown --synth dtype '${args.synth}'`, 'use q4, q8, bf16 or f32')
      dir = join(process.env.DBCLUSTER_HOME ?? join(homedir(), '.dbcluster'), 'models', `synth-qwen3-0.6b-${dtype}`)
      if (!existsSync(join(dir, 'config.json'))) {
        consola.start(`creating a synthetic model with Qwen3-0.6B shapes (${dtype}) in ${dir}`)
        await synthesizeModel(
          dir,
          { arch: 'qwen3', dtype, ...QWEN3_0_6B_SHAPE, seed: 0 },
          (line) => !args.json && consola.start(line),
        )
      }
    }
    if (args.nodes !== undefined) {
      const nodes = Number(args.nodes)
      if (!Number.isInteger(nodes) || nodes < 2)
        throw new UsageError(`--nodes must be an integer >= 2, got '${args.nodes}'`)
      const int = (v: string, name: string) => {
        const n = Number(v)
        if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${v}'`)
        return n
      }
      const r = await runClusterDecodeBench({
        model: dir!,
        nodes,
        runs: int(args.runs, 'runs'),
        maxTokens: int(args['max-tokens'], 'max-tokens'),
        promptTokens: int(args['prompt-tokens'], 'prompt-tokens'),
        backend: args.backend,
        onProgress: (line) => !args.json && consola.start(line),
      })
      if (args.json) return console.log(JSON.stringify(r))
      console.log('| configuration | decode tok/s (batch 1) | ratio |\n| --- | --- | --- |')
      console.log(`| 1 process, 1 thread | ${r.single_1_thread_tps} | 1.00 |`)
      console.log(
        `| 1 process, ${nodes} threads | ${r.single_n_threads_tps} | ${(r.single_n_threads_tps / r.single_1_thread_tps).toFixed(2)} |`,
      )
      console.log(
        `| ${nodes} nodes, 1 thread each | ${r.cluster_tps} | ${r.ratio_vs_single_1_thread.toFixed(2)} (${r.ratio_vs_single_n_threads.toFixed(2)} of ${nodes} threads) |`,
      )
      consola.info(
        `per step on the cluster: ${r.per_token_ms.stages.map((ms, i) => `stage ${i} ${ms} ms`).join(', ')}, hops ${r.per_token_ms.hops} ms`,
      )
      return
    }
    const kvDtype = args['kv-dtype']
    if (kvDtype !== undefined && kvDtype !== 'f16' && kvDtype !== 'f32')
      throw new UsageError(`unknown --kv-dtype '${kvDtype}'`, 'use f16 or f32')
    const { backend, reason } = selectBackend(parseBackendChoice(args.backend), {
      threads: args.threads ? Number(args.threads) : undefined,
      precision: parsePrecision(args.precision),
    })
    if (!args.json) consola.info(reason)
    if (args.constrained) {
      let schema: Record<string, unknown>
      try {
        schema = JSON.parse(readFileSync(args.constrained, 'utf8'))
      } catch (error) {
        throw new UsageError(`cannot read the schema ${args.constrained}: ${(error as Error).message}`)
      }
      const r = await runConstrainedDecodeBench(dir!, backend, reason, {
        batches,
        schema,
        promptTokens: Number(args['prompt-tokens']),
        decodeSteps: Number(args.steps),
        onProgress: (line) => !args.json && consola.start(line),
      })
      if (args.json) return console.log(JSON.stringify(r))
      console.log(
        '| batch | decode tok/s | constrained tok/s | ratio | mask ms/token (p50, p90) | sample ms/token (plain, masked) | forward ms (plain, constrained) | compile ms |\n| --- | --- | --- | --- | --- | --- | --- | --- |',
      )
      for (const row of r.results)
        console.log(
          `| ${row.batch} | ${row.plain_tps} | ${row.constrained_tps} | ${row.ratio} | ${row.mask_ms_p50}, ${row.mask_ms_p90} | ${row.plain_sample_ms_p50}, ${row.sample_ms_p50} | ${row.plain_forward_ms_p50}, ${row.forward_ms_p50} | ${row.compile_ms} |`,
        )
      return
    }
    const result = runDecodeBench(dir!, backend, reason, {
      batches,
      kvDtype,
      promptTokens: Number(args['prompt-tokens']),
      decodeSteps: Number(args.steps),
      onProgress: (line) => !args.json && consola.start(line),
    })
    if (args.json) {
      console.log(JSON.stringify(result))
      return
    }
    consola.info(
      `memory read ${result.memory_read_gbps} GB/s; ${(result.weight_bytes_per_step / 1024 ** 2).toFixed(1)} MiB of weights read per step; ${result.kv_dtype} KV cache`,
    )
    console.log('| batch | prefill tok/s | decode tok/s | step ms | roofline |\n| --- | --- | --- | --- | --- |')
    for (const r of result.results)
      console.log(`| ${r.batch} | ${r.prefill_tps} | ${r.decode_tps} | ${r.step_ms_p50} | ${r.roofline_ratio} |`)
  },
})
