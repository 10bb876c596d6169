/** The decoder config every architecture shares, parsed once at the edge: defaults applied, missing keys named. */
import { CheckpointError } from './errors.ts'
import type { LayerCacheSpec } from './kv-cache.ts'
import { parseQuantization, type QuantizationConfig } from './quantization.ts'

export interface RopeScaling {
  type: 'default' | 'linear' | 'llama3' | 'yarn'
  factor: number
  lowFreqFactor: number
  highFreqFactor: number
  originalMaxPositions: number
  /** yarn only (mlx-lm YarnRoPE). */
  betaFast: number
  betaSlow: number
  mscale: number
  mscaleAllDim: number
}

export interface DecoderConfig {
  modelType: string
  hiddenSize: number
  numLayers: number
  numHeads: number
  numKvHeads: number
  headDim: number
  intermediateSize: number
  vocabSize: number
  rmsNormEps: number
  ropeTheta: number
  ropeTraditional: boolean
  ropeScaling: RopeScaling
  tieWordEmbeddings: boolean
  attentionBias: boolean
  maxPositions: number
  eosTokenIds: number[]
  quantization: QuantizationConfig
  /** The cache kind of every layer (default: a full KV cache of numKvHeads × headDim each). */
  layerCaches?: LayerCacheSpec[]
  /** Prefix of the text model's tensors (`language_model.` when a multimodal checkpoint nests it; default none). */
  weightPrefix?: string
  /** Mixture of experts: tensor names holding expert stacks contain this, and a token uses `share` of each stack. */
  experts?: { path: string; share: number }
}

export function requireInt(raw: Record<string, unknown>, key: string): number {
  const v = raw[key]
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new CheckpointError('E_CONFIG', `config.json: '${key}' must be a positive integer, got ${JSON.stringify(v)}`)
  }
  return v
}

function positiveNumber(raw: Record<string, unknown>, key: string, fallback: number): number {
  const v = raw[key] ?? fallback
  if (typeof v !== 'number' || !(v > 0))
    throw new CheckpointError('E_CONFIG', `config.json: '${key}' must be a positive number, got ${JSON.stringify(v)}`)
  return v
}

function parseRopeScaling(raw: unknown, allowYarn: boolean): RopeScaling {
  const none: RopeScaling = {
    type: 'default',
    factor: 1,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 8192,
    betaFast: 32,
    betaSlow: 1,
    mscale: 1,
    mscaleAllDim: 0,
  }
  if (!raw || typeof raw !== 'object') return none
  const r = raw as Record<string, unknown>
  const type = String(r.rope_type ?? r.type ?? 'default')
  const supported = allowYarn ? ['default', 'linear', 'llama3', 'yarn'] : ['default', 'linear', 'llama3']
  if (!supported.includes(type)) {
    throw new CheckpointError(
      'E_CONFIG',
      `rope_scaling type '${type}' is not supported`,
      `supported: ${supported.join(', ')}`,
    )
  }
  const factor = Number(r.factor ?? 1)
  if (!(factor > 0))
    throw new CheckpointError('E_CONFIG', `rope_scaling factor must be positive, got ${JSON.stringify(r.factor)}`)
  return {
    type: type as RopeScaling['type'],
    factor,
    lowFreqFactor: Number(r.low_freq_factor ?? 1),
    highFreqFactor: Number(r.high_freq_factor ?? 4),
    originalMaxPositions: Number(r.original_max_position_embeddings ?? (type === 'yarn' ? 4096 : 8192)),
    betaFast: Number(r.beta_fast ?? 32),
    betaSlow: Number(r.beta_slow ?? 1),
    mscale: Number(r.mscale ?? 1),
    mscaleAllDim: Number(r.mscale_all_dim ?? 0),
  }
}

/** Common decoder fields; families add their own defaults through `overrides`. */
export function parseDecoderConfig(
  raw: Record<string, unknown>,
  overrides: { tieWordEmbeddings?: boolean; attentionBias?: boolean; allowYarn?: boolean } = {},
): DecoderConfig {
  const hiddenSize = requireInt(raw, 'hidden_size')
  const numHeads = requireInt(raw, 'num_attention_heads')
  const numKvHeads =
    raw.num_key_value_heads === undefined || raw.num_key_value_heads === null
      ? numHeads
      : requireInt(raw, 'num_key_value_heads')
  if (numHeads % numKvHeads) {
    throw new CheckpointError(
      'E_CONFIG',
      `config.json: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    )
  }
  const headDim =
    raw.head_dim === undefined || raw.head_dim === null ? hiddenSize / numHeads : requireInt(raw, 'head_dim')
  if (!Number.isInteger(headDim) || headDim % 2) {
    throw new CheckpointError(
      'E_CONFIG',
      `config.json: head_dim ${headDim} must be an even integer`,
      'set head_dim, or make hidden_size a multiple of num_attention_heads',
    )
  }
  const eos = raw.eos_token_id
  return {
    modelType: String(raw.model_type),
    hiddenSize,
    numLayers: requireInt(raw, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: requireInt(raw, 'intermediate_size'),
    vocabSize: requireInt(raw, 'vocab_size'),
    rmsNormEps: positiveNumber(raw, 'rms_norm_eps', 1e-6),
    ropeTheta: positiveNumber(raw, 'rope_theta', 10000),
    ropeTraditional: Boolean(raw.rope_traditional ?? false),
    ropeScaling: parseRopeScaling(raw.rope_scaling, overrides.allowYarn ?? false),
    tieWordEmbeddings:
      typeof raw.tie_word_embeddings === 'boolean' ? raw.tie_word_embeddings : (overrides.tieWordEmbeddings ?? true),
    attentionBias: typeof raw.attention_bias === 'boolean' ? raw.attention_bias : (overrides.attentionBias ?? false),
    maxPositions: Number(raw.max_position_embeddings ?? 32768),
    eosTokenIds: Array.isArray(eos) ? eos.map(Number) : typeof eos === 'number' ? [eos] : [],
    quantization: parseQuantization(raw),
  }
}
