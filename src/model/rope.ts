/** RoPE variants (mlx-lm rope_utils): default, linear scaling (scale = 1/factor), llama3 (per-frequency periods) and yarn
 * (blended periods, plus a magnitude scale on q and k: `ropeMagnitude`). */
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
  if (s.type === 'yarn') {
    // mlx-lm YarnRoPE: periods blend base^(2i/d) and factor·base^(2i/d) over a linear ramp between the correction dims
    const correctionDim = (rotations: number) =>
      (dims * Math.log(s.originalMaxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(base))
    const low = Math.max(Math.floor(correctionDim(s.betaFast)), 0)
    let high = Math.min(Math.ceil(correctionDim(s.betaSlow)), dims - 1)
    if (low === high) high += 0.001
    const freqs = new Float32Array(dims / 2)
    for (let i = 0; i < dims / 2; i++) {
      const extra = base ** ((2 * i) / dims)
      const inter = s.factor * extra
      const mask = 1 - Math.min(Math.max((i - low) / (high - low), 0), 1)
      freqs[i] = (inter * extra) / (inter * mask + extra * (1 - mask))
    }
    return { dims, traditional: config.ropeTraditional, base, scale: 1, freqs }
  }
  return { dims, traditional: config.ropeTraditional, base, scale: 1 }
}

/** The factor yarn multiplies q and k by before rotating them (1 for every other kind). */
export function ropeMagnitude(config: DecoderConfig): number {
  const s = config.ropeScaling
  if (s.type !== 'yarn') return 1
  const mscale = (scale: number, m: number) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1)
  return mscale(s.factor, s.mscale) / mscale(s.factor, s.mscaleAllDim)
}
