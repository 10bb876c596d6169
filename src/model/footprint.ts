/** What each part of a checkpoint weighs, from the safetensors headers alone (no tensor data read): the layer planner
 * splits by these bytes, so MoE and dense layers, or a quantized and a float layer, count for what they really are. */
import { join } from 'node:path'
import { openCheckpoint, readJson } from './checkpoint.ts'
import { fullLayers, kvBytesPerTokenLayer } from './kv-cache.ts'
import { architectureFor } from './registry.ts'

export interface CheckpointFootprint {
  numLayers: number
  /** Weight bytes of each decoder layer (length numLayers). */
  layerBytes: number[]
  /** Embedding table bytes, held by the first stage. */
  embeddingBytes: number
  /** Final norm + lm_head bytes held by the last stage; with a tied head, the embedding table it reuses is counted here too. */
  headBytes: number
  /** The largest per-layer KV bytes per token (attention layers; f32 on the cpu backend). */
  kvBytesPerTokenLayer: number
  /** Cache bytes layer `layer` holds for `tokens` tokens of one sequence: sliding-window layers stop growing at their
   * ring, recurrent layers hold a fixed state. */
  layerKvBytes(layer: number, tokens: number): number
}

/** Weight bytes per layer, embedding and head of the checkpoint in `dir`, and the KV its layers keep with attention caches
 * of `kvElementBytes` per value (the serving backend's kvDtype: the head plans with its own). */
export function checkpointFootprint(dir: string, kvElementBytes = 4): CheckpointFootprint {
  const raw = readJson(join(dir, 'config.json'), 'config.json')
  const config = architectureFor(raw.model_type).parseConfig(raw)
  const root = config.weightPrefix ?? ''
  const checkpoint = openCheckpoint(dir)
  const layerBytes = new Array<number>(config.numLayers).fill(0)
  let embeddingBytes = 0
  let headBytes = 0
  const layerPrefix = `${root}model.layers.`
  for (const [name, e] of checkpoint.tensors) {
    const bytes = e.end - e.begin
    if (name.startsWith(layerPrefix)) {
      const layer = Number.parseInt(name.slice(layerPrefix.length), 10)
      if (layer >= 0 && layer < config.numLayers) layerBytes[layer]! += bytes
    } else if (name.startsWith(`${root}model.embed_tokens.`)) embeddingBytes += bytes
    else if (name.startsWith(`${root}model.norm.`) || name.startsWith(`${root}lm_head.`)) headBytes += bytes
  }
  if (config.tieWordEmbeddings) headBytes += embeddingBytes
  const specs = config.layerCaches ?? fullLayers(config.numLayers, config.numKvHeads, config.headDim)
  return {
    numLayers: config.numLayers,
    layerBytes,
    embeddingBytes,
    headBytes,
    kvBytesPerTokenLayer: Math.max(
      0,
      ...specs.map((s) => (s.kind === 'recurrent' ? 0 : kvBytesPerTokenLayer(s.kvHeads, s.headDim, kvElementBytes))),
    ),
    layerKvBytes(layer, tokens) {
      const s = specs[layer]!
      // a recurrent layer holds the same state whatever the length
      if (s.kind === 'recurrent') return 4 * ((s.convKernel - 1) * s.convChannels + s.heads * s.valueDim * s.keyDim)
      const held = s.kind === 'window' ? Math.min(tokens, 2 * s.window) : tokens
      return held * kvBytesPerTokenLayer(s.kvHeads, s.headDim, kvElementBytes)
    },
  }
}

/** Weight bytes of each decoder layer of the checkpoint in `dir` (see checkpointFootprint for the embedding and head). */
export const layerWeightBytes = (dir: string): number[] => checkpointFootprint(dir).layerBytes
