/** RoPE variants (mlx-lm rope_utils): default, linear scaling (scale = 1/factor) and llama3 (per-frequency periods). */
import type { RopeOptions } from '../tensor/backend.ts'
import type { DecoderConfig } from './config.ts'

export function ropeOptions(config: DecoderConfig): RopeOptions {
  const dims = config.headDim
  const base = config.ropeTheta
  const s = config.ropeScaling
  if (s.type === 'linear') return { dims, traditional: config.ropeTraditional, base, scale: 1 / s.factor }
  if (s.type === 'llama3') {
    // mlx-lm Llama3RoPE: wavelengths beyond the low-frequency band are stretched by `factor`, a smooth ramp in between.
    const lowWavelen = s.originalMaxPositions / s.lowFreqFactor
    const highWavelen = s.originalMaxPositions / s.highFreqFactor
    const freqs = new Float32Array(dims / 2)
    for (let i = 0; i < dims / 2; i++) {
      const period = base ** ((2 * i) / dims)
      const wavelen = 2 * Math.PI * period
      if (wavelen > lowWavelen) freqs[i] = period * s.factor
      else if (!(wavelen > highWavelen && wavelen < lowWavelen)) freqs[i] = period
      else {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
        freqs[i] = period / ((1 - smooth) / s.factor + smooth)
      }
    }
    return { dims, traditional: config.ropeTraditional, base, scale: 1, freqs }
  }
  return { dims, traditional: config.ropeTraditional, base, scale: 1 }
}
