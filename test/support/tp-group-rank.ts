/** One rank > 0 of a sealed tensor-parallel group for the group tests: connects to rank 0 on PORT, says its rank in
 * clear, seals with the channel KIND (native | script) under KEY (hex), then follows the script rank 0 runs: for each
 * step message (u32 n) an all_sum of n values f(rank, i), then a gather of 2 rows of n values f(rank + 10, i), then a
 * byte gather of its message for n (tp-partials.ts messageFor), until a message of n = 0. Prints the sums' bytes as hex lines (and fails if a gather returned anything here).
 * Usage: bun tp-group-rank.ts PORT RANK SIZE KIND KEY */
import { BlockingSocket } from '../../src/tensor-parallel/blocking-socket.ts'
import { NativeTpChannel, ScriptTpChannel, SealedTpGroup } from '../../src/tensor-parallel/sealed-group.ts'
import { messageFor, partialFor } from './tp-partials.ts'

const [port, rank, size, kind, key] = process.argv.slice(2)
const socket = BlockingSocket.connect('127.0.0.1', Number(port), 5000)
socket.send(new Uint8Array(new Uint32Array([Number(rank)]).buffer), 5000)
const keyBytes = Uint8Array.from(Buffer.from(key!, 'hex'))
const channel =
  kind === 'native'
    ? new NativeTpChannel(socket, keyBytes, 'tp-group', Number(rank), 0)
    : new ScriptTpChannel(socket, keyBytes, 'tp-group', Number(rank), 0)
const group = new SealedTpGroup(Number(rank), Number(size), [channel], 10_000)
for (;;) {
  const step = group.broadcast()
  const n = new DataView(step.buffer, step.byteOffset).getUint32(0, true)
  if (n === 0) break
  const sum = group.allSum(partialFor(Number(rank), n))
  if (group.gatherLast(partialFor(Number(rank) + 10, 2 * n), 2) !== null)
    throw new Error('a gather returned values on a rank > 0')
  if (group.gatherBytes(messageFor(Number(rank), n), 0) !== null)
    throw new Error('a byte gather returned messages on a rank > 0')
  // after the gather: rank 0 reads this output only at the end, and a full pipe would block the print
  console.log(Buffer.from(sum.buffer, sum.byteOffset, sum.byteLength).toString('hex'))
}
group.close()
