/** MLX quantization settings from config.json (design/mlx-c.md §4): a global {group_size, bits, mode} plus per-module
 * overrides keyed by module path (or `false` for a module left in float). Modes: `affine` (scales and biases) and
 * `mxfp4` (4-bit E2M1 values, group 32, u8 E8M0 scales, no biases; GPT-OSS). A per-module dict without `mode` is affine,
 * as MLX's to_quantized defaults it. Parsed once; bad values fail at the edge. */
import { CheckpointError } from './errors.ts'

export type QuantMode = 'affine' | 'mxfp4'

export interface QuantParams {
  groupSize: number
  bits: number
  mode: QuantMode
}

export interface QuantizationConfig {
  /** Params for the module at `path` if it is quantized: listed in the config, or its `.scales` tensor exists. */
  forModule(path: string, hasScales: boolean): QuantParams | null
}

export const SUPPORTED_BITS = [2, 3, 4, 5, 6, 8] as const
export const SUPPORTED_GROUP_SIZES = [32, 64, 128] as const

const NOT_QUANTIZED: QuantizationConfig = { forModule: () => null }

function params(raw: Record<string, unknown>, where: string, fallback?: QuantParams): QuantParams {
  const mode = raw.mode ?? 'affine'
  if (mode === 'mxfp4') {
    const groupSize = Number(raw.group_size ?? 32)
    const bits = Number(raw.bits ?? 4)
    if (groupSize !== 32 || bits !== 4)
      throw new CheckpointError(
        'E_CKPT_QUANT',
        `config.json: ${where} is mxfp4 with group_size ${groupSize}, bits ${bits}`,
        'mxfp4 is always group_size 32, bits 4',
      )
    return { groupSize, bits, mode }
  }
  if (mode !== 'affine') {
    throw new CheckpointError(
      'E_CKPT_QUANT',
      `config.json: ${where} uses quantization mode '${String(mode)}'`,
      'supported modes: affine, mxfp4',
    )
  }
  const groupSize = Number(raw.group_size ?? fallback?.groupSize ?? 64)
  const bits = Number(raw.bits ?? fallback?.bits ?? 4)
  if (!(SUPPORTED_BITS as readonly number[]).includes(bits)) {
    throw new CheckpointError(
      'E_CKPT_QUANT',
      `config.json: ${where} has bits ${bits}`,
      `supported: ${SUPPORTED_BITS.join(', ')}`,
    )
  }
  if (!(SUPPORTED_GROUP_SIZES as readonly number[]).includes(groupSize)) {
    throw new CheckpointError(
      'E_CKPT_QUANT',
      `config.json: ${where} has group_size ${groupSize}`,
      `supported: ${SUPPORTED_GROUP_SIZES.join(', ')}`,
    )
  }
  return { groupSize, bits, mode }
}

export function parseQuantization(raw: Record<string, unknown>): QuantizationConfig {
  // mlx-lm writes `quantization` and mirrors it as `quantization_config`; HF-style configs may carry only the latter
  let q = raw.quantization ?? raw.quantization_config
  if (q === undefined || q === null || q === false) return NOT_QUANTIZED
  if (typeof q !== 'object' || Array.isArray(q))
    throw new CheckpointError('E_CKPT_QUANT', `config.json: 'quantization' must be an object, got ${JSON.stringify(q)}`)
  // legacy HF form (mlx-lm load_model): quant_method mxfp4 means every quantized module is mxfp4
  if ((q as Record<string, unknown>).quant_method === 'mxfp4' && raw.quantization === undefined)
    q = { group_size: 32, bits: 4, mode: 'mxfp4' }
  const dict = q as Record<string, unknown>
  const global = params(dict, 'quantization')
  // per-module entries: every key that is not one of the global fields; validated here, not at first use
  const overrides = new Map<string, QuantParams | null>()
  for (const [key, value] of Object.entries(dict)) {
    if (key === 'group_size' || key === 'bits' || key === 'mode' || key === 'quant_method') continue
    if (value === false) overrides.set(key, null)
    else if (value && typeof value === 'object' && !Array.isArray(value))
      overrides.set(key, params(value as Record<string, unknown>, `quantization['${key}']`, global))
  }
  return {
    forModule(path, hasScales) {
      const own = overrides.get(path)
      if (own !== undefined) return own
      return hasScales ? global : null
    },
  }
}
