/** A connected pair of blocking sockets on loopback (the tensor-parallel channel's transport), added to `open` so the
 * test's afterEach closes them. */
import { BlockingListener, BlockingSocket } from '../../src/tensor-parallel/blocking-socket.ts'

export function socketPair(open: { close(): void }[]): [BlockingSocket, BlockingSocket] {
  const listener = BlockingListener.listen('127.0.0.1', 0)
  const a = BlockingSocket.connect('127.0.0.1', listener.port, 2000)
  const b = listener.accept(2000)
  listener.close()
  open.push(a, b)
  return [a, b]
}
