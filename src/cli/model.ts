/** `dbcluster model`: work with model folders (synth: write a synthetic checkpoint in the MLX-community layout). */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { UsageError } from '../errors.ts'
import { synthesizeModel, type SynthArch, type SynthDtype } from '../model/synth.ts'

const int = (value: string | undefined, name: string, fallback?: number): number => {
  if (value === undefined) {
    if (fallback === undefined) throw new UsageError(`--${name} is required`)
    return fallback
  }
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got '${value}'`)
  return n
}

const synth = defineCommand({
  meta: { name: 'synth', description: 'Write a deterministic random-weight model in the MLX-community layout (with the real Qwen3 tokenizer)' },
  args: {
    out: { type: 'positional', description: 'Output folder', required: true },
    arch: { type: 'string', description: 'Architecture: llama, qwen2 or qwen3', default: 'qwen3' },
    layers: { type: 'string', description: 'Decoder layers', default: '4' },
    hidden: { type: 'string', description: 'Hidden size', default: '256' },
    heads: { type: 'string', description: 'Attention heads', default: '4' },
    'kv-heads': { type: 'string', description: 'Key/value heads (GQA)', default: '2' },
    'head-dim': { type: 'string', description: 'Head dimension', default: '64' },
    intermediate: { type: 'string', description: 'MLP intermediate size', default: '512' },
    dtype: { type: 'string', description: 'Weights: f32, f16, bf16, q4 or q8 (MLX affine, bf16 scales)', default: 'bf16' },
    'group-size': { type: 'string', description: 'Quantization group size (32, 64, 128)', default: '64' },
    vocab: { type: 'string', description: 'Vocabulary size (at least the tokenizer size, 151669)', default: '151936' },
    seed: { type: 'string', description: 'Random seed (same seed, same weights)', default: '0' },
    'shard-mb': { type: 'string', description: 'Split weights into safetensors files of at most this many MiB (writes an index)', valueHint: 'MiB' },
  },
  async run({ args }) {
    const arch = args.arch as SynthArch
    if (!['llama', 'qwen2', 'qwen3'].includes(arch)) throw new UsageError(`unknown --arch '${args.arch}'`, 'use llama, qwen2 or qwen3')
    const dtype = args.dtype as SynthDtype
    if (!['f32', 'f16', 'bf16', 'q4', 'q8'].includes(dtype)) throw new UsageError(`unknown --dtype '${args.dtype}'`, 'use f32, f16, bf16, q4 or q8')
    const result = await synthesizeModel(
      args.out,
      {
        arch,
        dtype,
        layers: int(args.layers, 'layers'),
        hidden: int(args.hidden, 'hidden'),
        heads: int(args.heads, 'heads'),
        kvHeads: int(args['kv-heads'], 'kv-heads'),
        headDim: int(args['head-dim'], 'head-dim'),
        intermediate: int(args.intermediate, 'intermediate'),
        groupSize: int(args['group-size'], 'group-size'),
        vocab: int(args.vocab, 'vocab'),
        seed: Number(args.seed),
        shardBytes: args['shard-mb'] ? int(args['shard-mb'], 'shard-mb') * 1024 * 1024 : undefined,
      },
      (line) => consola.start(line),
    )
    consola.success(`wrote ${args.out}: ${result.files.length} safetensors file(s), ${(result.bytes / 1024 ** 2).toFixed(1)} MiB of weights`)
  },
})

export default defineCommand({
  meta: { name: 'model', description: 'Model folders: synthesize test models' },
  subCommands: { synth, pull: () => import('./model-pull.ts').then((m) => m.default), list: () => import('./model-list.ts').then((m) => m.default) },
})
