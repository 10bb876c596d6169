/** `dbcluster bench accuracy`: every kernel path on this machine against the float64 reference, teacher-forced. */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import {
  ACCURACY_PROMPTS,
  decodeGreedy,
  ensureGenericShim,
  KERNEL_PATHS,
  runAccuracyBench,
  writeRuns,
  type KernelPath,
  type ReferenceLogits,
} from '../bench/accuracy.ts'
import { DbcError, UsageError } from '../errors.ts'
import { synthesizeModel, type SynthDtype } from '../model/synth.ts'
import { openCpuBackend } from '../tensor/cpu.ts'
import { openMlxBackend, probe as probeMlx } from '../tensor/mlx.ts'

/** Small enough for the float64 reference to read 3 × 24 positions in seconds, large enough for 4 groups per row. */
export const ACCURACY_SYNTH_SHAPE = { layers: 4, hidden: 256, heads: 4, kvHeads: 2, headDim: 64, intermediate: 768 }

const SOURCE_ROOT = join(import.meta.dir, '..', '..')

/** The float64 reference decoder lives with the tests (test/reference/), outside the shipped tree: loaded from the
 * source checkout at run time. */
async function loadReference(): Promise<(dir: string) => ReferenceLogits> {
  const file = join(SOURCE_ROOT, 'test', 'reference', 'decoder.ts')
  if (import.meta.dir.includes('$bunfs') || !existsSync(file))
    throw new DbcError(
      'E_NO_REFERENCE',
      'bench accuracy needs the float64 reference decoder (test/reference/decoder.ts), which only a source checkout has',
      'run it from the repository: bun src/main.ts bench accuracy …',
    )
  const { ReferenceDecoder } = (await import(file)) as {
    ReferenceDecoder: new (dir: string) => { logits(tokens: number[]): Float64Array[] }
  }
  return (dir) => {
    const decoder = new ReferenceDecoder(dir)
    return (tokens) => decoder.logits(tokens)
  }
}

export default defineCommand({
  meta: {
    name: 'accuracy',
    description:
      'KL divergence, logit gap and top-1 agreement against the float64 reference for every kernel path here (AVX-512, AVX2, generic C, mlx)',
  },
  args: {
    model: { type: 'string', description: 'Model folder (or use --synth)', valueHint: 'DIR' },
    synth: {
      type: 'string',
      description:
        'Use a small synthetic Qwen3 model (4 layers, hidden 256, group 64) in this dtype, created on first use',
      valueHint: 'q4|q8|bf16',
    },
    paths: { type: 'string', description: 'Comma-separated kernel paths to measure', default: KERNEL_PATHS.join(',') },
    steps: { type: 'string', description: 'Greedy tokens decoded per prompt', default: '24' },
    'generic-shim': {
      type: 'string',
      description: 'A libdbc.so built without AVX2 (default: build/libdbc-generic.so, built from the checkout)',
      valueHint: 'FILE',
    },
    json: {
      type: 'boolean',
      description: 'Print one JSON object {model, prompts, steps, results: [...]}',
      default: false,
    },
    path: {
      type: 'string',
      description: '(internal) decode with this process only, as the path named',
      valueHint: 'PATH',
    },
    emit: { type: 'string', description: '(internal) with --path: where to write the runs', valueHint: 'FILE' },
    force: {
      type: 'string',
      description: '(internal) with --path: JSON token sequences to teacher-force instead of decoding greedily',
      valueHint: 'FILE',
    },
  },
  async run({ args }) {
    if (!args.model === !args.synth) throw new UsageError('give exactly one of --model DIR or --synth DTYPE')
    const steps = Number(args.steps)
    if (!Number.isInteger(steps) || steps < 1)
      throw new UsageError(`--steps must be a positive integer, got '${args.steps}'`)
    let dir = args.model
    if (args.synth) {
      const dtype = args.synth as SynthDtype
      if (!['q4', 'q8', 'bf16'].includes(dtype))
        throw new UsageError(`unknown --synth dtype '${args.synth}'`, 'use q4, q8 or bf16')
      dir = join(process.env.DBCLUSTER_HOME ?? join(homedir(), '.dbcluster'), 'models', `synth-accuracy-qwen3-${dtype}`)
      if (!existsSync(join(dir, 'config.json'))) {
        consola.start(`creating a small synthetic Qwen3 model (${dtype}) in ${dir}`)
        await synthesizeModel(dir, { arch: 'qwen3', dtype, ...ACCURACY_SYNTH_SHAPE, groupSize: 64, seed: 1 })
      }
    }
    if (args.path) {
      if (!args.emit) throw new UsageError('--path needs --emit FILE')
      const backend =
        args.path === 'mlx'
          ? openMlxBackend()
          : openCpuBackend({ precision: args.path.endsWith('-exact') ? 'exact' : 'fast' })
      const forced = args.force ? (JSON.parse(readFileSync(args.force, 'utf8')) as number[][]) : undefined
      writeRuns(args.emit, decodeGreedy(dir!, backend, ACCURACY_PROMPTS, steps, forced))
      return
    }
    const paths = args.paths.split(',').map((p) => p.trim()) as KernelPath[]
    for (const p of paths)
      if (!KERNEL_PATHS.includes(p))
        throw new UsageError(`unknown path '${p}'`, `use some of ${KERNEL_PATHS.join(', ')}`)
    const progress = (line: string) => process.stderr.write(`[bench accuracy] ${line}\n`)
    const reference = await loadReference()
    const genericShim =
      args['generic-shim'] ?? (paths.includes('generic') ? ensureGenericShim(SOURCE_ROOT, progress) : undefined)
    const result = await runAccuracyBench(dir!, {
      paths,
      steps,
      reference,
      genericShim,
      mlx: paths.includes('mlx') ? probeMlx() : { available: false, reason: 'not asked for' },
      onProgress: progress,
    })
    if (args.json) {
      console.log(JSON.stringify(result))
      return
    }
    console.log(
      '| path | positions | mean KL | mean gap | max gap | mean gap / std | max gap / std | rms Δ / std | top-1 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    )
    for (const r of result.results) {
      if ('unavailable' in r) console.log(`| ${r.path} | skipped: ${r.unavailable} | | | | | | | |`)
      else
        console.log(
          `| ${r.path} | ${r.positions} | ${r.kl_mean} | ${r.gap_mean} | ${r.gap_max} | ${pct(r.gap_mean_share)} | ${pct(r.gap_max_share)} | ${pct(r.rms_diff_share)} | ${r.top1}/${r.positions} |`,
        )
    }
    consola.info(
      `logits' std (reference, mean over positions): ${result.results.find((r) => 'logit_std' in r)?.logit_std ?? '-'}`,
    )
  },
})

const pct = (share: number) => `${(share * 100).toFixed(2)}%`
