/** The values rank r contributes to an all_sum of n in the group tests: varied signs and magnitudes, so the order of
 * the additions shows in the bits. */
export function partialFor(rank: number, n: number): Float32Array {
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = Math.sin(i * 0.37 + rank * 1.9) * 10 ** (((i + rank) % 7) - 3)
  return out
}

/** The bytes rank r sends rank 0 in a byte gather for n: a length of its own (rank 2 sends none) and bytes of its own. */
export function messageFor(rank: number, n: number): Uint8Array {
  const length = rank === 2 ? 0 : (n * (rank + 1)) % 5000
  return Uint8Array.from({ length }, (_, i) => (i * 31 + rank * 7) & 0xff)
}
