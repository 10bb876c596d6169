/** MX FP4 (MLX mode "mxfp4") of a float matrix [rows, cols]: per group of 32, the power-of-two scale 2^(e − 127) that
 * brings the group's largest magnitude to at most 6 (E2M1's largest value), then each value to the nearest E2M1 code,
 * packed 8 codes per u32 LSB-first like MLX's 4-bit values. Used by `model synth`; any valid scale/code choice loads. */
export function quantizeMxfp4(w: Float32Array, rows: number, cols: number): { words: Uint32Array; scales: Uint8Array } {
  const values = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
  const words = new Uint32Array((rows * cols) / 8)
  const scales = new Uint8Array((rows * cols) / 32)
  for (let g = 0; g < scales.length; g++) {
    let amax = 0
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(w[g * 32 + i]!))
    const e = amax > 0 ? Math.min(254, Math.max(0, Math.ceil(Math.log2(amax / 6)) + 127)) : 0
    scales[g] = e
    const scale = 2 ** (e - 127)
    for (let i = 0; i < 32; i++) {
      const v = w[g * 32 + i]! / scale
      let best = 0
      for (let c = 1; c < 8; c++)
        if (Math.abs(Math.abs(v) - values[c]!) < Math.abs(Math.abs(v) - values[best]!)) best = c
      const code = (v < 0 && best ? 8 : 0) | best
      const at = g * 32 + i
      words[at >> 3] = (words[at >> 3]! | (code << (4 * (at & 7)))) >>> 0
    }
  }
  return { words, scales }
}

/** MLX affine quantization of a float matrix (mlx ops.cpp affine_quantize): per group, bias = the edge value with the
 * larger magnitude (0 when it rounds to level 0), scale may be negative, q = round((w − bias)/scale) clipped to [0, 2^bits − 1], packed LSB-first. */
export interface Quantized {
  words: Uint32Array
  scales: Float32Array
  biases: Float32Array
}

export function quantizeAffine(
  w: Float32Array,
  rows: number,
  cols: number,
  groupSize: number,
  bits: number,
): Quantized {
  const nBins = 2 ** bits - 1
  const groups = cols / groupSize
  const scales = new Float32Array(rows * groups)
  const biases = new Float32Array(rows * groups)
  const wordsPerRow = (cols * bits) / 32
  const words = new Uint32Array(rows * wordsPerRow)
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      let min = Infinity,
        max = -Infinity
      const base = r * cols + g * groupSize
      for (let i = 0; i < groupSize; i++) {
        min = Math.min(min, w[base + i]!)
        max = Math.max(max, w[base + i]!)
      }
      const minEdge = Math.abs(min) > Math.abs(max)
      let scale = Math.max((max - min) / nBins, 1e-7)
      if (!minEdge) scale = -scale
      const edge = minEdge ? min : max
      const q0 = Math.round(edge / scale)
      if (q0 !== 0) scale = edge / q0
      scale = Math.fround(scale)
      const bias = q0 === 0 ? 0 : Math.fround(edge)
      scales[r * groups + g] = scale
      biases[r * groups + g] = bias
      for (let i = 0; i < groupSize; i++) {
        const q = Math.min(nBins, Math.max(0, Math.round((w[base + i]! - bias) / scale)))
        const bit = (g * groupSize + i) * bits
        const at = r * wordsPerRow + (bit >>> 5)
        const shift = bit & 31
        words[at] = (words[at]! | (q << shift)) >>> 0
        if (shift + bits > 32) words[at + 1] = (words[at + 1]! | (q >>> (32 - shift))) >>> 0
      }
    }
  }
  return { words, scales, biases }
}
