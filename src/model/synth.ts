/** `model synth`: deterministic random-weight checkpoints in exactly the MLX-community layout (config.json, safetensors
 * with an index when sharded, MLX affine quantization, the real Qwen3 tokenizer and chat template), loaded like real ones by
 * tests, benches and the demo model. Each family declares its tensors and config keys in `arch/<model_type>.synth.ts`. */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DbcError } from '../errors.ts'
import type { DType } from '../tensor/backend.ts'
import { gemma3, type Gemma3SynthOptions } from './arch/gemma3.synth.ts'
import { gemma4, type Gemma4SynthOptions } from './arch/gemma4.synth.ts'
import { gptOss, type GptOssSynthOptions } from './arch/gpt_oss.synth.ts'
import { llama } from './arch/llama.synth.ts'
import { qwen2 } from './arch/qwen2.synth.ts'
import { qwen3 } from './arch/qwen3.synth.ts'
import { qwen35, type Qwen35SynthOptions } from './arch/qwen3_5.synth.ts'
import { tensorWriter, writeShards, type QuantOverride } from './synth-tensors.ts'
import { QWEN3_EOS, QWEN3_TOKENIZER_FILES, QWEN3_TOKENIZER_SIZE } from './tokenizer-assets.ts'

export const SYNTH_ARCHS = ['llama', 'qwen2', 'qwen3', 'gemma3', 'gemma4', 'gpt_oss', 'qwen3_5'] as const
export type SynthArch = (typeof SYNTH_ARCHS)[number]
/** mxfp4 (gpt_oss): experts in mxfp4, every other matrix 8-bit affine, as the MLX-community MXFP4 checkpoints are. */
export type SynthDtype = 'f32' | 'f16' | 'bf16' | 'q4' | 'q8' | 'mxfp4'

/** The shape and dtype of a synthetic model; each family's own options are declared beside its tensors. */
export interface SynthSpec extends Gemma3SynthOptions, Gemma4SynthOptions, GptOssSynthOptions, Qwen35SynthOptions {
  arch: SynthArch
  layers: number
  hidden: number
  heads: number
  kvHeads: number
  headDim: number
  intermediate: number
  dtype: SynthDtype
  groupSize?: number
  vocab?: number
  seed?: number
  /** Tie lm_head to the embedding (default: qwen yes, llama no, so both paths are exercised). */
  tieEmbeddings?: boolean
  /** Per-module quantization overrides by module path (MLX mixed recipes): other bits/group, or `false` for float. */
  quantOverrides?: Record<string, QuantOverride | false>
  /** Split the weights into files of at most this many bytes (with model.safetensors.index.json). */
  shardBytes?: number
}

/** Qwen3-0.6B's shapes (the bench model). */
export const QWEN3_0_6B_SHAPE = { layers: 28, hidden: 1024, heads: 16, kvHeads: 8, headDim: 128, intermediate: 3072 }

/** How a family writes its tensors. Every call draws from the one random stream, so call order is checkpoint order. */
export interface SynthTensors {
  /** A random tensor in the model's float dtype, or in `dtype` whatever the model's. */
  float(name: string, shape: number[], std: number, mean?: number, dtype?: DType): void
  /** A Linear [rows, cols], or `lead` stacked ones ([...lead, rows, cols], experts): float, affine-quantized, or mxfp4. */
  matrix(name: string, rows: number, cols: number, std: number, lead?: number[], mxfp4?: boolean): void
}

/** A family's declarations (`arch/<model_type>.synth.ts`): its names, whether lm_head is tied unless the spec says, a prefix
 * of every tensor name, whether --dtype mxfp4 applies (to its experts), and `plan`, which checks the spec's family options. */
export interface SynthFamily {
  modelType: string
  causalLm: string
  tied: boolean
  root?: string
  mxfp4?: boolean
  plan(spec: SynthSpec): SynthPlan
}

/** `layer` writes layer `l`'s tensors under `prefix`; `config` adds config.json keys (or overrides shared defaults);
 * `overrides` is the family's quantization recipe, where the spec names none; `nest` rewrites the finished flat config. */
export interface SynthPlan {
  layer(t: SynthTensors, prefix: string, l: number): void
  config?: Record<string, unknown>
  overrides?: Record<string, QuantOverride>
  nest?(flat: Record<string, unknown>): Record<string, unknown>
}

const FAMILIES: Record<SynthArch, SynthFamily> = {
  llama,
  qwen2,
  qwen3,
  gemma3,
  gemma4,
  gpt_oss: gptOss,
  qwen3_5: qwen35,
}

export async function synthesizeModel(
  out: string,
  spec: SynthSpec,
  onProgress: (line: string) => void = () => {},
): Promise<{ files: string[]; bytes: number }> {
  const family = FAMILIES[spec.arch]
  const { layers, hidden, heads, kvHeads, headDim, intermediate, vocab = 151936, groupSize = 64, seed = 0 } = spec
  const tie = spec.tieEmbeddings ?? family.tied
  const floatDtype: DType = spec.dtype === 'f32' ? 'f32' : spec.dtype === 'f16' ? 'f16' : 'bf16'
  const bits = spec.dtype === 'q4' ? 4 : spec.dtype === 'q8' || spec.dtype === 'mxfp4' ? 8 : 0
  if (spec.dtype === 'mxfp4' && !family.mxfp4)
    throw new DbcError(
      'E_SYNTH',
      '--dtype mxfp4 is for --arch gpt_oss (its experts)',
      'use q4 or q8 for other families',
    )
  const plan = family.plan(spec)
  if (vocab < QWEN3_TOKENIZER_SIZE) {
    throw new DbcError(
      'E_SYNTH',
      `--vocab ${vocab} is smaller than the tokenizer's ${QWEN3_TOKENIZER_SIZE} tokens`,
      `use --vocab ${QWEN3_TOKENIZER_SIZE} or more (default 151936)`,
    )
  }
  for (const [k, v] of Object.entries({ layers, hidden, heads, kvHeads, headDim, intermediate }))
    if (!Number.isInteger(v) || v < 1) throw new DbcError('E_SYNTH', `--${k} must be a positive integer`)
  const windows = { 'sliding-window': spec.slidingWindow, 'sliding-window-pattern': spec.slidingWindowPattern }
  for (const [k, v] of Object.entries(windows))
    if (v !== undefined && (!Number.isInteger(v) || v < 1))
      throw new DbcError('E_SYNTH', `--${k} must be a positive integer`)
  if (heads % kvHeads) throw new DbcError('E_SYNTH', `--heads ${heads} must be a multiple of --kv-heads ${kvHeads}`)
  if (bits && [hidden, intermediate, heads * headDim].some((k) => k % groupSize))
    throw new DbcError(
      'E_SYNTH',
      `hidden, intermediate and heads×head-dim must be multiples of the group size ${groupSize} to quantize`,
    )
  if (!bits && spec.quantOverrides)
    throw new DbcError('E_SYNTH', 'quantization overrides need a quantized --dtype (q4 or q8)')
  const overrides: Record<string, QuantOverride | false> = { ...spec.quantOverrides }
  for (const [name, o] of Object.entries(plan.overrides ?? {})) overrides[name] ??= o
  const { tensors: t, entries, mxfp4Modules } = tensorWriter({ seed, floatDtype, bits, groupSize, overrides })
  const root = family.root ?? ''
  onProgress('embedding')
  // Small embeddings (as in trained models) let the layers, not the input token, decide the next token: a tied head
  // fed mostly its own input row would repeat that token forever.
  t.matrix(`${root}model.embed_tokens`, vocab, hidden, 0.05)
  for (let l = 0; l < layers; l++) {
    onProgress(`layer ${l + 1}/${layers}`)
    plan.layer(t, `${root}model.layers.${l}`, l)
  }
  // Mixed-sign final norm weights scramble the head's alignment with the input embedding, so no token maps to itself.
  t.float(`${root}model.norm.weight`, [hidden], 1)
  if (!tie) t.matrix(`${root}lm_head`, vocab, hidden, 1 / Math.sqrt(hidden))
  mkdirSync(out, { recursive: true })
  onProgress('writing safetensors')
  const bytes = entries.reduce((a, e) => a + e.data.byteLength, 0)
  const files = await writeShards(out, entries, bytes, spec.shardBytes ?? 5 * 1024 ** 3)
  const moduleEntries = Object.fromEntries(
    Object.entries(overrides).map(([path, o]) => [
      path,
      o && { group_size: o.groupSize ?? groupSize, bits: o.bits, mode: 'affine' },
    ]),
  )
  for (const name of mxfp4Modules) moduleEntries[name] = { group_size: 32, bits: 4, mode: 'mxfp4' }
  const quantization = bits ? { group_size: groupSize, bits, mode: 'affine', ...moduleEntries } : undefined
  // the family's keys follow the shared ones, and replace rms_norm_eps and rope_theta in place where it sets them
  const flat: Record<string, unknown> = {
    model_type: family.modelType,
    architectures: [family.causalLm],
    hidden_size: hidden,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    intermediate_size: intermediate,
    vocab_size: vocab,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    max_position_embeddings: 40960,
    tie_word_embeddings: tie,
    torch_dtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[floatDtype as 'f32' | 'f16' | 'bf16'],
    eos_token_id: QWEN3_EOS.imEnd,
    ...plan.config,
    ...(quantization ? { quantization, quantization_config: quantization } : {}),
    dbcluster_synthetic: { seed, dtype: spec.dtype },
  }
  writeFileSync(join(out, 'config.json'), JSON.stringify(plan.nest ? plan.nest(flat) : flat, null, 2))
  writeFileSync(
    join(out, 'generation_config.json'),
    JSON.stringify({ eos_token_id: [QWEN3_EOS.imEnd, QWEN3_EOS.endOfText] }, null, 2),
  )
  // Bun.file reads the copies embedded in the binary too (copyFileSync cannot see Bun's embedded file system)
  for (const [name, path] of Object.entries(QWEN3_TOKENIZER_FILES)) await Bun.write(join(out, name), Bun.file(path))
  return { files, bytes }
}
