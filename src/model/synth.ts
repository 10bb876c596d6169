/** `model synth`: deterministic random-weight checkpoints in exactly the MLX-community layout (config.json, safetensors
 * with an index when sharded, MLX affine quantization, the real Qwen3 tokenizer and chat template). Tests, benches and the
 * demo model use them; real checkpoints load through the same code. */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DbcError } from '../errors.ts'
import type { DType } from '../tensor/backend.ts'
import { quantizeAffine, quantizeMxfp4 } from './quantize.ts'
import { writeSafetensors } from './safetensors.ts'
import { QWEN3_EOS, QWEN3_TOKENIZER_FILES, QWEN3_TOKENIZER_SIZE } from './tokenizer-assets.ts'

export const SYNTH_ARCHS = ['llama', 'qwen2', 'qwen3', 'gemma3', 'gemma4', 'gpt_oss', 'qwen3_5'] as const
export type SynthArch = (typeof SYNTH_ARCHS)[number]
/** mxfp4 (gpt_oss): experts in mxfp4, every other matrix 8-bit affine, as the MLX-community MXFP4 checkpoints are. */
export type SynthDtype = 'f32' | 'f16' | 'bf16' | 'q4' | 'q8' | 'mxfp4'

export interface SynthSpec {
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
  quantOverrides?: Record<string, { bits: number; groupSize?: number } | false>
  /** Split the weights into files of at most this many bytes (with model.safetensors.index.json). */
  shardBytes?: number
  /** Sliding-window families: keys a sliding layer attends (gemma3 default 512). */
  slidingWindow?: number
  /** gemma3: every n-th layer is global (default 6). */
  slidingWindowPattern?: number
  /** gpt_oss: experts per layer (default 4) and experts each token uses (default 2). gemma4: set `experts` to add the
   * MoE block beside the dense MLP (intermediate size `moeIntermediate`, default intermediate / 2). */
  experts?: number
  expertsPerToken?: number
  moeIntermediate?: number
  /** gemma4: full-attention layers with keys as values (attention_k_eq_v) and their head dim (default 2 × head-dim). */
  kEqV?: boolean
  globalHeadDim?: number
  /** qwen3_5: every n-th layer is full attention, the others Gated DeltaNet (default 4). */
  fullAttentionInterval?: number
  /** qwen3_5 linear attention: key/value heads (default kv-heads / heads) and head dims (default head-dim), conv kernel (4). */
  linearKeyHeads?: number
  linearValueHeads?: number
  linearKeyDim?: number
  linearValueDim?: number
  convKernel?: number
}

const CAUSAL_LM: Record<SynthArch, string> = {
  llama: 'LlamaForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
  gemma3: 'Gemma3ForCausalLM',
  gemma4: 'Gemma4ForCausalLM',
  gpt_oss: 'GptOssForCausalLM',
  qwen3_5: 'Qwen3_5ForConditionalGeneration',
}
const MODEL_TYPE: Record<SynthArch, string> = {
  llama: 'llama',
  qwen2: 'qwen2',
  qwen3: 'qwen3',
  gemma3: 'gemma3_text',
  gemma4: 'gemma4_text',
  gpt_oss: 'gpt_oss',
  qwen3_5: 'qwen3_5',
}

/** Qwen3-0.6B's shapes (the bench model). */
export const QWEN3_0_6B_SHAPE = { layers: 28, hidden: 1024, heads: 16, kvHeads: 8, headDim: 128, intermediate: 3072 }

/** Fast deterministic normal-ish numbers: Irwin–Hall sum of 4 xorshift uniforms, scaled to unit variance. */
function gaussianSource(seed: number) {
  let s = (seed * 2654435761) >>> 0 || 1
  const u = () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 4294967296
  }
  return (n: number, std: number, mean = 0): Float32Array => {
    const out = new Float32Array(n)
    const k = std * Math.sqrt(3) // sum of 4 U(0,1) has variance 1/3
    for (let i = 0; i < n; i++) out[i] = mean + (u() + u() + u() + u() - 2) * k
    return out
  }
}

function toBf16(values: Float32Array): Uint8Array {
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length)
  const out = new Uint16Array(values.length)
  for (let i = 0; i < values.length; i++) {
    const bits = u[i]!
    out[i] = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff
  }
  return new Uint8Array(out.buffer)
}

function toF16(values: Float32Array): Uint8Array {
  return new Uint8Array(Float16Array.from(values).buffer)
}

type Entry = { name: string; dtype: DType; shape: number[]; data: Uint8Array }

export async function synthesizeModel(out: string, spec: SynthSpec, onProgress: (line: string) => void = () => {}): Promise<{ files: string[]; bytes: number }> {
  const vocab = spec.vocab ?? 151936
  const groupSize = spec.groupSize ?? 64
  const seed = spec.seed ?? 0
  const gptOss = spec.arch === 'gpt_oss'
  const tie = spec.tieEmbeddings ?? (spec.arch !== 'llama' && !gptOss)
  const floatDtype: DType = spec.dtype === 'f32' ? 'f32' : spec.dtype === 'f16' ? 'f16' : 'bf16'
  const bits = spec.dtype === 'q4' ? 4 : spec.dtype === 'q8' || spec.dtype === 'mxfp4' ? 8 : 0
  if (spec.dtype === 'mxfp4' && !gptOss) throw new DbcError('E_SYNTH', '--dtype mxfp4 is for --arch gpt_oss (its experts)', 'use q4 or q8 for other families')
  const qwen35 = spec.arch === 'qwen3_5'
  // Qwen3.5 checkpoints nest the text model under language_model. (mlx-lm qwen3_5 sanitize)
  const root = qwen35 ? 'language_model.' : ''
  const linear = {
    interval: spec.fullAttentionInterval ?? 4,
    keyHeads: spec.linearKeyHeads ?? spec.kvHeads,
    valueHeads: spec.linearValueHeads ?? spec.heads,
    keyDim: spec.linearKeyDim ?? spec.headDim,
    valueDim: spec.linearValueDim ?? spec.headDim,
    kernel: spec.convKernel ?? 4,
  }
  if (qwen35) {
    for (const [k, v] of Object.entries(linear)) if (!Number.isInteger(v) || v < 1) throw new DbcError('E_SYNTH', `qwen3_5: ${k} must be a positive integer`)
    if (linear.valueHeads % linear.keyHeads) throw new DbcError('E_SYNTH', `qwen3_5: linear value heads ${linear.valueHeads} must be a multiple of key heads ${linear.keyHeads}`)
  }
  // qwen3_5 with --experts: the MoE variant (routed experts of intermediate/2 plus a shared expert of intermediate)
  const q35moe = qwen35 && spec.experts ? { experts: spec.experts, topK: spec.expertsPerToken ?? 2, intermediate: spec.moeIntermediate ?? Math.max(1, Math.floor(spec.intermediate / 2)) } : null
  if (q35moe && (q35moe.topK < 1 || q35moe.topK > q35moe.experts)) throw new DbcError('E_SYNTH', `--experts-per-token ${q35moe.topK} must be between 1 and --experts ${q35moe.experts}`)
  const gemma4 = spec.arch === 'gemma4'
  const g4 = {
    pattern: spec.slidingWindowPattern ?? 5,
    globalHeadDim: spec.globalHeadDim ?? 2 * spec.headDim,
    kEqV: spec.kEqV ?? false,
    experts: gemma4 ? (spec.experts ?? 0) : 0,
    topK: spec.expertsPerToken ?? 2,
    moeIntermediate: spec.moeIntermediate ?? Math.max(1, Math.floor(spec.intermediate / 2)),
  }
  if (gemma4 && g4.experts && (g4.topK < 1 || g4.topK > g4.experts)) throw new DbcError('E_SYNTH', `--experts-per-token ${g4.topK} must be between 1 and --experts ${g4.experts}`)
  const numExperts = spec.experts ?? 4
  const expertsPerToken = spec.expertsPerToken ?? 2
  if (gptOss && (!Number.isInteger(numExperts) || !Number.isInteger(expertsPerToken) || expertsPerToken < 1 || expertsPerToken > numExperts)) {
    throw new DbcError('E_SYNTH', `--experts-per-token ${expertsPerToken} must be between 1 and --experts ${numExperts}`)
  }
  if (vocab < QWEN3_TOKENIZER_SIZE) {
    throw new DbcError('E_SYNTH', `--vocab ${vocab} is smaller than the tokenizer's ${QWEN3_TOKENIZER_SIZE} tokens`, `use --vocab ${QWEN3_TOKENIZER_SIZE} or more (default 151936)`)
  }
  for (const [k, v] of Object.entries({ layers: spec.layers, hidden: spec.hidden, heads: spec.heads, kvHeads: spec.kvHeads, headDim: spec.headDim, intermediate: spec.intermediate })) {
    if (!Number.isInteger(v) || v < 1) throw new DbcError('E_SYNTH', `--${k} must be a positive integer`)
  }
  for (const [k, v] of Object.entries({ 'sliding-window': spec.slidingWindow, 'sliding-window-pattern': spec.slidingWindowPattern })) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new DbcError('E_SYNTH', `--${k} must be a positive integer`)
  }
  if (spec.heads % spec.kvHeads) throw new DbcError('E_SYNTH', `--heads ${spec.heads} must be a multiple of --kv-heads ${spec.kvHeads}`)
  if (bits && [spec.hidden, spec.intermediate, spec.heads * spec.headDim].some((k) => k % groupSize)) {
    throw new DbcError('E_SYNTH', `hidden, intermediate and heads×head-dim must be multiples of the group size ${groupSize} to quantize`)
  }
  if (!bits && spec.quantOverrides) throw new DbcError('E_SYNTH', 'quantization overrides need a quantized --dtype (q4 or q8)')
  const random = gaussianSource(seed + 1)
  const entries: Entry[] = []
  const float = (name: string, values: Float32Array, shape: number[]) =>
    entries.push({ name, dtype: floatDtype, shape, data: floatDtype === 'f32' ? new Uint8Array(values.buffer) : floatDtype === 'f16' ? toF16(values) : toBf16(values) })
  const overrides: Record<string, { bits: number; groupSize?: number } | false> = { ...spec.quantOverrides }
  // mlx-lm's GPT-OSS recipe keeps the router at 8 bits, group 64
  if (gptOss && spec.dtype === 'q4' && spec.hidden % 64 === 0)
    for (let l = 0; l < spec.layers; l++) overrides[`model.layers.${l}.mlp.router`] ??= { bits: 8, groupSize: 64 }
  const mxfp4Modules: string[] = []
  /** A Linear [rows, cols], or `lead` stacked ones ([...lead, rows, cols], gpt_oss experts), float or quantized. */
  const matrix = (name: string, rows: number, cols: number, std: number, lead: number[] = [], mxfp4 = false) => {
    const count = lead.reduce((a, d) => a * d, 1) * rows
    const w = random(count * cols, std)
    if (mxfp4) {
      if (cols % 32) throw new DbcError('E_SYNTH', `${name}: ${cols} inputs do not quantize to mxfp4 (group 32)`)
      const q = quantizeMxfp4(w, count, cols)
      entries.push({ name: `${name}.weight`, dtype: 'u32', shape: [...lead, rows, cols / 8], data: new Uint8Array(q.words.buffer) })
      entries.push({ name: `${name}.scales`, dtype: 'u8', shape: [...lead, rows, cols / 32], data: q.scales })
      mxfp4Modules.push(name)
      return
    }
    const own = overrides[name]
    const b = own === false ? 0 : own ? own.bits : bits
    const gs = own ? (own.groupSize ?? groupSize) : groupSize
    if (!b) return float(`${name}.weight`, w, [...lead, rows, cols])
    if (cols % gs || (cols * b) % 32) throw new DbcError('E_SYNTH', `${name}: ${cols} inputs do not quantize at ${b} bits, group ${gs}`)
    const q = quantizeAffine(w, count, cols, gs, b)
    entries.push({ name: `${name}.weight`, dtype: 'u32', shape: [...lead, rows, (cols * b) / 32], data: new Uint8Array(q.words.buffer) })
    float(`${name}.scales`, q.scales, [...lead, rows, cols / gs])
    float(`${name}.biases`, q.biases, [...lead, rows, cols / gs])
  }
  const { hidden, intermediate, heads, kvHeads, headDim } = spec
  onProgress('embedding')
  // Small embeddings (as in trained models) let the layers, not the input token, decide the next token: a tied head
  // fed mostly its own input row would repeat that token forever.
  matrix(`${root}model.embed_tokens`, vocab, hidden, 0.05)
  const gemma = spec.arch === 'gemma3'
  // Gemma's norms scale by 1 + weight: store weights around 0 so the effective scale is near 1, as trained ones are
  const normMean = gemma ? 0 : 1
  for (let l = 0; l < spec.layers; l++) {
    onProgress(`layer ${l + 1}/${spec.layers}`)
    const p = `${root}model.layers.${l}`
    float(`${p}.input_layernorm.weight`, random(hidden, 0.1, normMean), [hidden])
    float(`${p}.post_attention_layernorm.weight`, random(hidden, 0.1, normMean), [hidden])
    if (gemma4) {
      float(`${p}.pre_feedforward_layernorm.weight`, random(hidden, 0.1, 1), [hidden])
      float(`${p}.post_feedforward_layernorm.weight`, random(hidden, 0.1, 1), [hidden])
      float(`${p}.layer_scalar`, random(1, 0.1, 1), [1])
      const full = (l + 1) % g4.pattern === 0
      const d = full ? g4.globalHeadDim : headDim
      matrix(`${p}.self_attn.q_proj`, heads * d, hidden, 1 / Math.sqrt(hidden))
      matrix(`${p}.self_attn.k_proj`, kvHeads * d, hidden, 1 / Math.sqrt(hidden))
      if (!(full && g4.kEqV)) matrix(`${p}.self_attn.v_proj`, kvHeads * d, hidden, 1 / Math.sqrt(hidden))
      matrix(`${p}.self_attn.o_proj`, hidden, heads * d, 1 / Math.sqrt(heads * d))
      // Gemma 4 does not scale scores: q/k norm weights around d^-¼ keep q·k near unit variance, as trained ones do,
      // instead of a near-argmax softmax
      const qk = d ** -0.25
      float(`${p}.self_attn.q_norm.weight`, random(d, 0.1 * qk, qk), [d])
      float(`${p}.self_attn.k_norm.weight`, random(d, 0.1 * qk, qk), [d])
      matrix(`${p}.mlp.gate_proj`, intermediate, hidden, 1 / Math.sqrt(hidden))
      matrix(`${p}.mlp.up_proj`, intermediate, hidden, 1 / Math.sqrt(hidden))
      matrix(`${p}.mlp.down_proj`, hidden, intermediate, 1 / Math.sqrt(intermediate))
      if (g4.experts) {
        for (const n of ['post_feedforward_layernorm_1', 'post_feedforward_layernorm_2', 'pre_feedforward_layernorm_2']) float(`${p}.${n}.weight`, random(hidden, 0.1, 1), [hidden])
        // a wide router spread makes the top-k choice clear-cut, so quantized and float models pick the same experts
        matrix(`${p}.router.proj`, g4.experts, hidden, 4)
        float(`${p}.router.scale`, random(hidden, 0.1, 1), [hidden])
        float(`${p}.router.per_expert_scale`, random(g4.experts, 0.1, 1), [g4.experts])
        const e = `${p}.experts.switch_glu`
        matrix(`${e}.gate_proj`, g4.moeIntermediate, hidden, 1 / Math.sqrt(hidden), [g4.experts])
        matrix(`${e}.up_proj`, g4.moeIntermediate, hidden, 1 / Math.sqrt(hidden), [g4.experts])
        matrix(`${e}.down_proj`, hidden, g4.moeIntermediate, 1 / Math.sqrt(g4.moeIntermediate), [g4.experts])
      }
      continue
    }
    if (qwen35) {
      if ((l + 1) % linear.interval !== 0) {
        const a = `${p}.linear_attn`
        const keyDim = linear.keyHeads * linear.keyDim, valueDim = linear.valueHeads * linear.valueDim, convDim = 2 * keyDim + valueDim
        matrix(`${a}.in_proj_qkv`, convDim, hidden, 1 / Math.sqrt(hidden))
        matrix(`${a}.in_proj_z`, valueDim, hidden, 1 / Math.sqrt(hidden))
        matrix(`${a}.in_proj_b`, linear.valueHeads, hidden, 1 / Math.sqrt(hidden))
        matrix(`${a}.in_proj_a`, linear.valueHeads, hidden, 1 / Math.sqrt(hidden))
        // MLX Conv1d layout [channels, kernel, 1]
        float(`${a}.conv1d.weight`, random(convDim * linear.kernel, 0.5), [convDim, linear.kernel, 1])
        float(`${a}.dt_bias`, random(linear.valueHeads, 0.5, 1), [linear.valueHeads])
        // A_log stays f32 in MLX checkpoints (mlx-lm's cast_predicate); decay rates exp(A_log) around 1
        entries.push({ name: `${a}.A_log`, dtype: 'f32', shape: [linear.valueHeads], data: new Uint8Array(random(linear.valueHeads, 0.5).buffer) })
        float(`${a}.norm.weight`, random(linear.valueDim, 0.1, 1), [linear.valueDim])
        matrix(`${a}.out_proj`, hidden, valueDim, 1 / Math.sqrt(valueDim))
      } else {
        matrix(`${p}.self_attn.q_proj`, 2 * heads * headDim, hidden, 1 / Math.sqrt(hidden))
        matrix(`${p}.self_attn.k_proj`, kvHeads * headDim, hidden, 1 / Math.sqrt(hidden))
        matrix(`${p}.self_attn.v_proj`, kvHeads * headDim, hidden, 1 / Math.sqrt(hidden))
        matrix(`${p}.self_attn.o_proj`, hidden, heads * headDim, 1 / Math.sqrt(heads * headDim))
        float(`${p}.self_attn.q_norm.weight`, random(headDim, 0.1, 1), [headDim])
        float(`${p}.self_attn.k_norm.weight`, random(headDim, 0.1, 1), [headDim])
      }
      if (q35moe) {
        const E = q35moe.experts, inter = q35moe.intermediate
        // a wide router spread makes the top-k choice clear-cut, so quantized and float models pick the same experts
        matrix(`${p}.mlp.gate`, E, hidden, 4 / Math.sqrt(hidden))
        matrix(`${p}.mlp.switch_mlp.gate_proj`, inter, hidden, 1 / Math.sqrt(hidden), [E])
        matrix(`${p}.mlp.switch_mlp.up_proj`, inter, hidden, 1 / Math.sqrt(hidden), [E])
        matrix(`${p}.mlp.switch_mlp.down_proj`, hidden, inter, 1 / Math.sqrt(inter), [E])
        matrix(`${p}.mlp.shared_expert.gate_proj`, intermediate, hidden, 1 / Math.sqrt(hidden))
        matrix(`${p}.mlp.shared_expert.up_proj`, intermediate, hidden, 1 / Math.sqrt(hidden))
        matrix(`${p}.mlp.shared_expert.down_proj`, hidden, intermediate, 1 / Math.sqrt(intermediate))
        matrix(`${p}.mlp.shared_expert_gate`, 1, hidden, 1 / Math.sqrt(hidden))
        continue
      }
      matrix(`${p}.mlp.gate_proj`, intermediate, hidden, 1 / Math.sqrt(hidden))
      matrix(`${p}.mlp.up_proj`, intermediate, hidden, 1 / Math.sqrt(hidden))
      matrix(`${p}.mlp.down_proj`, hidden, intermediate, 1 / Math.sqrt(intermediate))
      continue
    }
    if (gemma) {
      float(`${p}.pre_feedforward_layernorm.weight`, random(hidden, 0.1), [hidden])
      float(`${p}.post_feedforward_layernorm.weight`, random(hidden, 0.1), [hidden])
    }
    const attnStd = 1 / Math.sqrt(hidden)
    matrix(`${p}.self_attn.q_proj`, heads * headDim, hidden, attnStd)
    matrix(`${p}.self_attn.k_proj`, kvHeads * headDim, hidden, attnStd)
    matrix(`${p}.self_attn.v_proj`, kvHeads * headDim, hidden, attnStd)
    matrix(`${p}.self_attn.o_proj`, hidden, heads * headDim, 1 / Math.sqrt(heads * headDim))
    if (spec.arch === 'qwen2') {
      float(`${p}.self_attn.q_proj.bias`, random(heads * headDim, 0.1), [heads * headDim])
      float(`${p}.self_attn.k_proj.bias`, random(kvHeads * headDim, 0.1), [kvHeads * headDim])
      float(`${p}.self_attn.v_proj.bias`, random(kvHeads * headDim, 0.1), [kvHeads * headDim])
    }
    if (spec.arch === 'qwen3' || gemma) {
      float(`${p}.self_attn.q_norm.weight`, random(headDim, 0.1, normMean), [headDim])
      float(`${p}.self_attn.k_norm.weight`, random(headDim, 0.1, normMean), [headDim])
    }
    if (gptOss) {
      float(`${p}.self_attn.q_proj.bias`, random(heads * headDim, 0.1), [heads * headDim])
      float(`${p}.self_attn.k_proj.bias`, random(kvHeads * headDim, 0.1), [kvHeads * headDim])
      float(`${p}.self_attn.v_proj.bias`, random(kvHeads * headDim, 0.1), [kvHeads * headDim])
      float(`${p}.self_attn.o_proj.bias`, random(hidden, 0.1), [hidden])
      float(`${p}.self_attn.sinks`, random(heads, 1), [heads])
      // a wide router spread makes the top-k choice clear-cut, so quantized and float models pick the same experts
      matrix(`${p}.mlp.router`, numExperts, hidden, 4 / Math.sqrt(hidden))
      float(`${p}.mlp.router.bias`, random(numExperts, 0.5), [numExperts])
      const mx = spec.dtype === 'mxfp4'
      matrix(`${p}.mlp.experts.gate_proj`, intermediate, hidden, 1 / Math.sqrt(hidden), [numExperts], mx)
      matrix(`${p}.mlp.experts.up_proj`, intermediate, hidden, 1 / Math.sqrt(hidden), [numExperts], mx)
      matrix(`${p}.mlp.experts.down_proj`, hidden, intermediate, 1 / Math.sqrt(intermediate), [numExperts], mx)
      for (const part of ['gate_proj', 'up_proj']) float(`${p}.mlp.experts.${part}.bias`, random(numExperts * intermediate, 0.1), [numExperts, intermediate])
      float(`${p}.mlp.experts.down_proj.bias`, random(numExperts * hidden, 0.1), [numExperts, hidden])
      continue
    }
    matrix(`${p}.mlp.gate_proj`, intermediate, hidden, 1 / Math.sqrt(hidden))
    matrix(`${p}.mlp.up_proj`, intermediate, hidden, 1 / Math.sqrt(hidden))
    matrix(`${p}.mlp.down_proj`, hidden, intermediate, 1 / Math.sqrt(intermediate))
  }
  // Mixed-sign final norm weights scramble the head's alignment with the input embedding, so no token maps to itself.
  float(`${root}model.norm.weight`, random(hidden, 1), [hidden])
  if (!tie) matrix(`${root}lm_head`, vocab, hidden, 1 / Math.sqrt(hidden))

  mkdirSync(out, { recursive: true })
  onProgress('writing safetensors')
  const total = entries.reduce((a, e) => a + e.data.byteLength, 0)
  const shardBytes = spec.shardBytes ?? 5 * 1024 ** 3
  const shards: Entry[][] = [[]]
  let size = 0
  for (const e of entries) {
    if (size > 0 && size + e.data.byteLength > shardBytes) shards.push([]), (size = 0)
    shards.at(-1)!.push(e)
    size += e.data.byteLength
  }
  const files: string[] = []
  if (shards.length === 1) {
    await writeSafetensors(join(out, 'model.safetensors'), entries)
    files.push('model.safetensors')
  } else {
    const weightMap: Record<string, string> = {}
    for (const [i, shard] of shards.entries()) {
      const name = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`
      await writeSafetensors(join(out, name), shard)
      for (const e of shard) weightMap[e.name] = name
      files.push(name)
    }
    writeFileSync(join(out, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2))
  }
  const moduleEntries = Object.fromEntries(
    Object.entries(overrides).map(([path, o]) => [path, o === false ? false : { group_size: o.groupSize ?? groupSize, bits: o.bits, mode: 'affine' }]),
  )
  for (const name of mxfp4Modules) moduleEntries[name] = { group_size: 32, bits: 4, mode: 'mxfp4' }
  const quantization = bits ? { group_size: groupSize, bits, mode: 'affine', ...moduleEntries } : undefined
  const flat: Record<string, unknown> = {
    model_type: MODEL_TYPE[spec.arch],
    architectures: [CAUSAL_LM[spec.arch]],
    hidden_size: hidden,
    num_hidden_layers: spec.layers,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    intermediate_size: intermediate,
    vocab_size: vocab,
    rms_norm_eps: gptOss ? 1e-5 : 1e-6,
    rope_theta: spec.arch === 'llama' ? 500000 : gptOss ? 150000 : 1000000,
    max_position_embeddings: 40960,
    tie_word_embeddings: tie,
    torch_dtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[floatDtype as 'f32' | 'f16' | 'bf16'],
    eos_token_id: QWEN3_EOS.imEnd,
    ...(spec.arch === 'llama'
      ? { attention_bias: false, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }
      : {}),
    ...(gemma
      ? {
          rope_local_base_freq: 10000,
          sliding_window: spec.slidingWindow ?? 512,
          sliding_window_pattern: spec.slidingWindowPattern ?? 6,
          query_pre_attn_scalar: headDim,
          hidden_activation: 'gelu_pytorch_tanh',
          final_logit_softcapping: null,
        }
      : {}),
    ...(gemma4
      ? {
          global_head_dim: g4.globalHeadDim,
          attention_k_eq_v: g4.kEqV,
          num_global_key_value_heads: kvHeads,
          sliding_window: spec.slidingWindow ?? 512,
          sliding_window_pattern: g4.pattern,
          layer_types: Array.from({ length: spec.layers }, (_, i) => ((i + 1) % g4.pattern === 0 ? 'full_attention' : 'sliding_attention')),
          num_kv_shared_layers: 0,
          hidden_size_per_layer_input: 0,
          final_logit_softcapping: 30.0,
          enable_moe_block: g4.experts > 0,
          ...(g4.experts ? { num_experts: g4.experts, top_k_experts: g4.topK, moe_intermediate_size: g4.moeIntermediate } : {}),
          rope_parameters: {
            full_attention: { partial_rotary_factor: 0.25, rope_theta: 1000000.0, rope_type: 'proportional' },
            sliding_attention: { partial_rotary_factor: 1.0, rope_theta: 10000.0, rope_type: 'default' },
          },
        }
      : {}),
    ...(gptOss
      ? {
          num_local_experts: numExperts,
          num_experts_per_tok: expertsPerToken,
          experts_per_token: expertsPerToken,
          sliding_window: spec.slidingWindow ?? 128,
          layer_types: Array.from({ length: spec.layers }, (_, i) => (i % 2 ? 'full_attention' : 'sliding_attention')),
          attention_bias: true,
          swiglu_limit: 7.0,
          rope_scaling: { rope_type: 'yarn', factor: 32.0, beta_fast: 32.0, beta_slow: 1.0, truncate: false, original_max_position_embeddings: 4096 },
        }
      : {}),
    ...(qwen35
      ? {
          full_attention_interval: linear.interval,
          linear_num_key_heads: linear.keyHeads,
          linear_num_value_heads: linear.valueHeads,
          linear_key_head_dim: linear.keyDim,
          linear_value_head_dim: linear.valueDim,
          linear_conv_kernel_dim: linear.kernel,
          rope_parameters: { rope_type: 'default', rope_theta: 10000000, partial_rotary_factor: 0.25, mrope_section: [11, 11, 10] },
          ...(q35moe
            ? { num_experts: q35moe.experts, num_experts_per_tok: q35moe.topK, moe_intermediate_size: q35moe.intermediate, shared_expert_intermediate_size: intermediate, norm_topk_prob: true }
            : {}),
        }
      : {}),
    ...(quantization ? { quantization, quantization_config: quantization } : {}),
    dbcluster_synthetic: { seed, dtype: spec.dtype },
  }
  // Qwen3.5 checkpoints are multimodal: the text config nests under text_config, quantization and EOS stay at the top
  const { quantization: _q, quantization_config: _qc, dbcluster_synthetic, architectures, model_type, ...text } = flat
  const config = qwen35
    ? { model_type: q35moe ? 'qwen3_5_moe' : model_type, architectures, text_config: { ...text, model_type: 'qwen3_5_text' }, tie_word_embeddings: tie, eos_token_id: flat.eos_token_id, ...(quantization ? { quantization, quantization_config: quantization } : {}), dbcluster_synthetic }
    : flat
  writeFileSync(join(out, 'config.json'), JSON.stringify(config, null, 2))
  writeFileSync(join(out, 'generation_config.json'), JSON.stringify({ eos_token_id: [QWEN3_EOS.imEnd, QWEN3_EOS.endOfText] }, null, 2))
  // Bun.file reads the copies embedded in the binary too (copyFileSync cannot see Bun's embedded file system)
  for (const [name, path] of Object.entries(QWEN3_TOKENIZER_FILES)) await Bun.write(join(out, name), Bun.file(path))
  return { files, bytes: total }
}
