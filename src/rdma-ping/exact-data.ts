/** Integer-valued float32 data whose all_sum is exact (every partial sum stays below 2^24), so results compare bit for bit. */
export function rankData(rank: number, elements: number): Float32Array {
  const out = new Float32Array(elements)
  for (let i = 0; i < elements; i++) out[i] = ((i * 7 + rank * 13) % 1000) - 500
  return out
}

export function expectedSum(worldSize: number, elements: number): Float32Array {
  const out = new Float32Array(elements)
  for (let r = 0; r < worldSize; r++) {
    const d = rankData(r, elements)
    for (let i = 0; i < elements; i++) out[i]! += d[i]!
  }
  return out
}

/** Index of the first element that differs, or -1. */
export function firstMismatch(got: Float32Array, want: Float32Array): number {
  if (got.length !== want.length) return 0
  for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) return i
  return -1
}
