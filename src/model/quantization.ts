/** MLX affine quantization settings from config.json (design/mlx-c.md §4): a global {group_size, bits} plus per-module
 * overrides keyed by module path (or `false` for a module left in float). */
export interface QuantParams {
  groupSize: number
  bits: number
}

export interface QuantizationConfig {
  /** Params for the module at `path` if it is quantized: listed in the config, or its `.scales` tensor exists. */
  forModule(path: string, hasScales: boolean): QuantParams | null
}

export function parseQuantization(raw: Record<string, unknown>): QuantizationConfig {
  const q = (raw.quantization ?? raw.quantization_config) as Record<string, unknown> | false | undefined
  if (!q) return { forModule: () => null }
  const mode = (q.mode as string | undefined) ?? 'affine'
  if (mode !== 'affine') throw new Error(`quantization mode '${mode}' is not supported (affine only)`)
  const global: QuantParams = { groupSize: Number(q.group_size ?? 64), bits: Number(q.bits ?? 4) }
  return {
    forModule(path, hasScales) {
      const own = q[path]
      if (own === false) return null
      if (own && typeof own === 'object') {
        const o = own as Record<string, unknown>
        return { groupSize: Number(o.group_size ?? global.groupSize), bits: Number(o.bits ?? global.bits) }
      }
      return hasScales ? global : null
    },
  }
}
