/** model_type → architecture module: one record for names and aliases (mlx-lm MODEL_REMAPPING). */
import type { ArchitectureModule } from './architecture.ts'
import * as gemma3 from './arch/gemma3.ts'
import * as gemma4 from './arch/gemma4.ts'
import * as gpt_oss from './arch/gpt_oss.ts'
import * as llama from './arch/llama.ts'
import * as qwen2 from './arch/qwen2.ts'
import * as qwen3 from './arch/qwen3.ts'
import * as qwen3_5 from './arch/qwen3_5.ts'
import { CheckpointError } from './errors.ts'

/** A map, not an object: a checkpoint's model_type of `__proto__`, `constructor` or `toString` must find nothing. */
export const ARCHITECTURES: ReadonlyMap<string, ArchitectureModule> = new Map(
  Object.entries({
    llama,
    mistral: llama,
    qwen2,
    qwen3,
    gemma3_text: gemma3,
    gemma3,
    gemma4_text: gemma4,
    gemma4,
    gpt_oss,
    qwen3_5,
    qwen3_5_moe: qwen3_5,
  }),
)

export function architectureFor(modelType: unknown): ArchitectureModule {
  const arch = typeof modelType === 'string' ? ARCHITECTURES.get(modelType) : undefined
  if (!arch) {
    throw new CheckpointError(
      'E_MODEL_TYPE',
      `model_type '${String(modelType)}' is not supported`,
      `supported: ${[...ARCHITECTURES.keys()].sort().join(', ')}`,
    )
  }
  return arch
}
