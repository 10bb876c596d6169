/** `bench decode`: prefill and decode tok/s of one model on this machine at several batch sizes, and the decode roofline
 * ratio = weight bytes read per step × steps/s ÷ the memory read bandwidth measured in the same run. */
import { ModelStage } from '../model/shard.ts'
import type { Backend } from '../tensor/backend.ts'
import { measureMemoryReadGbps } from '../tensor/memory-bandwidth.ts'
import { median } from './stats.ts'

export interface DecodeBenchRow {
  batch: number
  prefill_tps: number
  decode_tps: number
  roofline_ratio: number
  step_ms_p50: number
}

export interface DecodeBenchResult {
  model: string
  backend: string
  threads: number
  weight_bytes_per_step: number
  memory_read_gbps: number
  prompt_tokens: number
  decode_steps: number
  kv_dtype: 'f32' | 'f16'
  results: DecodeBenchRow[]
}

export interface DecodeBenchOptions {
  batches: number[]
  promptTokens: number
  decodeSteps: number
  /** KV cache dtype (default: the backend's). */
  kvDtype?: 'f32' | 'f16'
  onProgress?: (line: string) => void
}

export function runDecodeBench(
  dir: string,
  backend: Backend,
  description: string,
  options: DecodeBenchOptions,
): DecodeBenchResult {
  const { batches, promptTokens, decodeSteps, onProgress = () => {} } = options
  onProgress('measuring memory read bandwidth')
  const memory = measureMemoryReadGbps()
  const maxBatch = Math.max(...batches)
  const kvDtype = options.kvDtype ?? backend.kvDtype
  const stage = ModelStage.load(dir, backend, { slots: maxBatch, maxLen: promptTokens + decodeSteps + 8, kvDtype })
  const results: DecodeBenchRow[] = []
  try {
    const prompt = Int32Array.from({ length: promptTokens }, (_, i) => 1000 + ((i * 7919) % 50000))
    for (const batch of batches) {
      onProgress(`batch ${batch}: prefill ${batch} × ${promptTokens} tokens`)
      const prefillTimes: number[] = []
      for (let slot = 0; slot < batch; slot++) {
        const t0 = performance.now()
        stage.forward({
          tokens: prompt,
          slots: new Int32Array(promptTokens).fill(slot),
          positions: Int32Array.from(prompt.keys()),
          logitRows: Int32Array.of(promptTokens - 1),
        })
        prefillTimes.push((performance.now() - t0) / 1000)
      }
      onProgress(`batch ${batch}: ${decodeSteps} decode steps`)
      const steps: number[] = []
      const slots = Int32Array.from({ length: batch }, (_, i) => i)
      for (let s = 0; s < decodeSteps; s++) {
        const t0 = performance.now()
        stage.forward({
          tokens: Int32Array.from({ length: batch }, (_, i) => 2000 + s + i),
          slots,
          positions: new Int32Array(batch).fill(promptTokens + s),
        })
        steps.push((performance.now() - t0) / 1000)
      }
      const step = median(steps.slice(Math.min(2, steps.length - 1))) // the first steps warm caches
      results.push({
        batch,
        prefill_tps: round(promptTokens / median(prefillTimes)),
        decode_tps: round(batch / step),
        roofline_ratio: round(stage.streamedBytes / step / 1e9 / memory, 3),
        step_ms_p50: round(step * 1000),
      })
    }
  } finally {
    stage.close()
  }
  return {
    model: dir,
    backend: description,
    threads: backend.threads,
    weight_bytes_per_step: stage.streamedBytes,
    memory_read_gbps: round(memory),
    prompt_tokens: promptTokens,
    decode_steps: decodeSteps,
    kv_dtype: kvDtype,
    results,
  }
}

const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits
