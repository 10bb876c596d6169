/** MLX affine quantization of a float matrix (mlx ops.cpp affine_quantize): per group, bias = the edge value with the
 * larger magnitude (0 when it rounds to level 0), scale may be negative, q = round((w − bias)/scale) clipped to [0, 2^bits − 1], packed LSB-first. */
export interface Quantized {
  words: Uint32Array
  scales: Float32Array
  biases: Float32Array
}

export function quantizeAffine(w: Float32Array, rows: number, cols: number, groupSize: number, bits: number): Quantized {
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
