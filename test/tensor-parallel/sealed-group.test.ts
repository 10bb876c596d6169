/** A sealed tensor-parallel group across real processes (2 and 3 ranks, the C and TypeScript channels mixed): every
 * rank gets the same all_sum, bit for bit, equal to the f32 sum in rank order; rank 0's step messages reach every rank;
 * a gather joins every rank's rows on rank 0 in rank order (the split lm_head's logits); a byte gather hands rank 0
 * every rank's message, each of its own length (the sampling summaries of split sampling). */
import { expect, test } from 'bun:test'
import { randomBytes } from 'node:crypto'
import { BlockingListener } from '../../src/tensor-parallel/blocking-socket.ts'
import {
  NativeTpChannel,
  openTpChannel,
  SealedTpGroup,
  type TpChannel,
} from '../../src/tensor-parallel/sealed-group.ts'
import { messageFor, partialFor } from '../support/tp-partials.ts'

const RANK = new URL('../support/tp-group-rank.ts', import.meta.url).pathname
const SIZES = [1, 7, 1024, 70_000]

/** Σ over the ranks in rank order, rounded to f32 after each addition as the group does. */
function expectedSum(size: number, n: number): Float32Array {
  const sum = partialFor(0, n)
  for (let r = 1; r < size; r++) {
    const part = partialFor(r, n)
    for (let i = 0; i < n; i++) sum[i] = sum[i]! + part[i]!
  }
  return sum
}

// rank 0 seals in C where it can; rank 1 in TypeScript, rank 2 in C: every pairing meets
const kinds = NativeTpChannel.available() ? ['native', 'script'] : ['script']
for (const size of [2, 3]) {
  test(`${size} ranks (${kinds.join(' and ')} channels): the same all_sum everywhere, equal to the f32 sum in rank order`, async () => {
    const key = new Uint8Array(randomBytes(32))
    const listener = BlockingListener.listen('127.0.0.1', 0)
    const ranks = Array.from({ length: size - 1 }, (_, i) =>
      Bun.spawn(
        [
          process.execPath,
          RANK,
          String(listener.port),
          String(i + 1),
          String(size),
          kinds[(i + 1) % kinds.length]!,
          Buffer.from(key).toString('hex'),
        ],
        { stdout: 'pipe', stderr: 'pipe' },
      ),
    )
    const channels: TpChannel[] = new Array(size - 1)
    try {
      for (let i = 1; i < size; i++) {
        const socket = listener.accept(10_000)
        const rank = new DataView(socket.receive(4, 5000).buffer).getUint32(0, true)
        channels[rank - 1] = openTpChannel(socket, key, 'tp-group', 0, rank)
      }
    } finally {
      listener.close()
    }
    const group = new SealedTpGroup(0, size, channels, 10_000)
    const mine: string[] = []
    for (const n of SIZES) {
      group.broadcast(new Uint8Array(new Uint32Array([n]).buffer))
      const sum = group.allSum(partialFor(0, n))
      expect(sum).toEqual(expectedSum(size, n))
      mine.push(Buffer.from(sum.buffer).toString('hex'))
      const joined = group.gatherLast(partialFor(10, 2 * n), 2)!
      const expected = new Float32Array(2 * n * size)
      for (let r = 0; r < size; r++) {
        const part = partialFor(r + 10, 2 * n)
        for (let row = 0; row < 2; row++) expected.set(part.subarray(row * n, (row + 1) * n), row * n * size + r * n)
      }
      expect(joined).toEqual(expected)
      const messages = group.gatherBytes(messageFor(0, n), 5000)!
      expect(messages.map((m) => Buffer.from(m).toString('hex'))).toEqual(
        Array.from({ length: size }, (_, r) => Buffer.from(messageFor(r, n)).toString('hex')),
      )
    }
    group.broadcast(new Uint8Array(4))
    group.close()
    for (const proc of ranks) {
      const [out, err, code] = await Promise.all([
        new Response(proc.stdout).text(),
        new Response(proc.stderr).text(),
        proc.exited,
      ])
      expect(err).toBe('')
      expect(code).toBe(0)
      expect(out.trim().split('\n')).toEqual(mine)
    }
  }, 30_000)
}
