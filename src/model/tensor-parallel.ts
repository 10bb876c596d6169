/** Tensor parallel over a model (mlx-lm shard()): each rank keeps 1/N of the attention heads and of the MLP width, so
 * the per-rank config divides those; the embedding and norms stay whole on every rank (lm_head splits by vocabulary where
 * the group can gather: layers.ts OutputHead). */
import { DbcError } from '../errors.ts'
import type { TensorParallel } from '../tensor/tensor-parallel.ts'
import type { ArchitectureModule } from './architecture.ts'
import type { DecoderConfig } from './config.ts'

/** The config one rank runs: heads, KV heads and the MLP width divided by the group size. */
export function shardConfig(
  config: DecoderConfig,
  tp: TensorParallel,
  modelType: string,
  arch: Pick<ArchitectureModule, 'tensorParallel' | 'shardExtra'>,
): DecoderConfig {
  if (tp.size === 1) return config
  if (!arch.tensorParallel)
    throw new DbcError(
      'E_TP_UNSUPPORTED',
      `tensor parallel is not built for model_type '${modelType}'`,
      'use a Llama, Mistral, Qwen2, Qwen3, Qwen3.5, Gemma 3, Gemma 4 or GPT-OSS model, or pipeline parallel (serve --peers)',
    )
  const extra = arch.shardExtra?.(config, tp.size)
  if (extra) config = extra.config
  const parts: [string, number][] = [
    ['attention heads', config.numHeads],
    ['KV heads', config.numKvHeads],
    ['MLP width (intermediate_size)', config.intermediateSize],
    ...(extra?.parts ?? []),
  ]
  for (const [what, n] of parts) {
    if (n % tp.size)
      throw new DbcError(
        'E_TP_SPLIT',
        `${what} (${n}) do not split into ${tp.size} equal parts`,
        `choose a --tp that divides ${config.numHeads} heads, ${config.numKvHeads} KV heads and ${config.intermediateSize}`,
      )
  }
  // a family with caches of its own per layer keeps this rank's KV heads in each (sliding windows), or this rank's heads
  // and their conv channels (linear attention's recurrent state)
  const layerCaches = config.layerCaches?.map((spec) =>
    spec.kind === 'recurrent'
      ? { ...spec, heads: spec.heads / tp.size, convChannels: spec.convChannels / tp.size }
      : { ...spec, kvHeads: spec.kvHeads / tp.size },
  )
  return {
    ...config,
    numHeads: config.numHeads / tp.size,
    numKvHeads: config.numKvHeads / tp.size,
    intermediateSize: config.intermediateSize / tp.size,
    ...(layerCaches ? { layerCaches } : {}),
  }
}
