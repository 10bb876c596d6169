/** `dbcluster model`: work with model folders (synth: write a synthetic checkpoint in the MLX-community layout). */
import { defineCommand } from 'citty'
import { consola } from 'consola'
import { UsageError } from '../errors.ts'
import { SYNTH_ARCHS, synthesizeModel, type SynthArch, type SynthDtype } from '../model/synth.ts'

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
  meta: {
    name: 'synth',
    description:
      'Write a deterministic random-weight model in the MLX-community layout (with the real Qwen3 tokenizer)',
  },
  args: {
    out: { type: 'positional', description: 'Output folder', required: true },
    arch: { type: 'string', description: `Architecture: ${SYNTH_ARCHS.join(', ')}`, default: 'qwen3' },
    layers: { type: 'string', description: 'Decoder layers', default: '4' },
    hidden: { type: 'string', description: 'Hidden size', default: '256' },
    heads: { type: 'string', description: 'Attention heads', default: '4' },
    'kv-heads': { type: 'string', description: 'Key/value heads (GQA)', default: '2' },
    'head-dim': { type: 'string', description: 'Head dimension', default: '64' },
    intermediate: { type: 'string', description: 'MLP intermediate size', default: '512' },
    dtype: {
      type: 'string',
      description:
        'Weights: f32, f16, bf16, q4 or q8 (MLX affine, bf16 scales), or mxfp4 (gpt_oss: mxfp4 experts, the rest q8)',
      default: 'bf16',
    },
    'group-size': { type: 'string', description: 'Quantization group size (32, 64, 128)', default: '64' },
    vocab: { type: 'string', description: 'Vocabulary size (at least the tokenizer size, 151669)', default: '151936' },
    seed: { type: 'string', description: 'Random seed (same seed, same weights)', default: '0' },
    'sliding-window': {
      type: 'string',
      description: 'gemma3, gemma4, gpt_oss: keys a sliding-window layer attends (default 512, gpt_oss 128)',
    },
    'sliding-window-pattern': {
      type: 'string',
      description: 'gemma3, gemma4: every n-th layer is global, the rest slide (default 6, gemma4 5)',
    },
    'global-head-dim': {
      type: 'string',
      description: 'gemma4: head dim of the full-attention layers (default 2 × head-dim)',
    },
    'k-eq-v': {
      type: 'boolean',
      description: 'gemma4: full-attention layers use their keys as values (attention_k_eq_v)',
      default: false,
    },
    experts: {
      type: 'string',
      description: 'gpt_oss: experts per layer (default 4); gemma4, qwen3_5: adds the MoE block with this many experts',
    },
    'experts-per-token': { type: 'string', description: 'gpt_oss: experts each token is routed to (default 2)' },
    'full-attention-interval': {
      type: 'string',
      description: 'qwen3_5: every n-th layer is full attention, the rest Gated DeltaNet (default 4)',
    },
    'shard-mb': {
      type: 'string',
      description: 'Split weights into safetensors files of at most this many MiB (writes an index)',
      valueHint: 'MiB',
    },
  },
  async run({ args }) {
    const arch = args.arch as SynthArch
    if (!(SYNTH_ARCHS as readonly string[]).includes(arch))
      throw new UsageError(`unknown --arch '${args.arch}'`, `use one of ${SYNTH_ARCHS.join(', ')}`)
    const dtype = args.dtype as SynthDtype
    if (!['f32', 'f16', 'bf16', 'q4', 'q8', 'mxfp4'].includes(dtype))
      throw new UsageError(`unknown --dtype '${args.dtype}'`, 'use f32, f16, bf16, q4, q8 or mxfp4')
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
        slidingWindow: args['sliding-window'] ? int(args['sliding-window'], 'sliding-window') : undefined,
        slidingWindowPattern: args['sliding-window-pattern']
          ? int(args['sliding-window-pattern'], 'sliding-window-pattern')
          : undefined,
        experts: args.experts ? int(args.experts, 'experts') : undefined,
        globalHeadDim: args['global-head-dim'] ? int(args['global-head-dim'], 'global-head-dim') : undefined,
        kEqV: Boolean(args['k-eq-v']),
        expertsPerToken: args['experts-per-token'] ? int(args['experts-per-token'], 'experts-per-token') : undefined,
        fullAttentionInterval: args['full-attention-interval']
          ? int(args['full-attention-interval'], 'full-attention-interval')
          : undefined,
      },
      (line) => consola.start(line),
    )
    consola.success(
      `wrote ${args.out}: ${result.files.length} safetensors file(s), ${(result.bytes / 1024 ** 2).toFixed(1)} MiB of weights`,
    )
  },
})

export default defineCommand({
  meta: { name: 'model', description: 'Model folders: synthesize test models' },
  subCommands: {
    synth,
    pull: () => import('./model-pull.ts').then((m) => m.default),
    list: () => import('./model-list.ts').then((m) => m.default),
  },
})
