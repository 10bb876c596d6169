/** A TCP connection whose reads and writes block the calling thread (ffi/tp_socket.c): for tensor parallel, where an
 * all_sum happens in the middle of a synchronous forward and no event loop can run. Every call has a deadline; a dead,
 * silent or closing peer is a LinkError, never a hang. Bytes only: sealing is the caller's. */
import { ptr } from '../tensor/native.ts'
import { tpSocketLibrary } from './native-socket.ts'
import { LinkError } from '../link/errors.ts'

const SOCK_TIMEOUT = -2
const SOCK_CLOSED = -3
const TPC_AUTH = -4
const TPC_PROTOCOL = -5

const cString = (text: string) => Buffer.from(`${text}\0`)
const EMPTY = new Uint8Array(1)

/** Throws the LinkError for a negative code of ffi/tp_socket.h, with the C side's message. */
export function failSocketCall(rc: number, what: string): never {
  const message = `${what}: ${String(tpSocketLibrary().dbc_last_error())}`
  if (rc === TPC_AUTH)
    throw new LinkError(
      'E_FRAME_AUTH',
      message,
      'the tensor-parallel group stopped; check the keys pinned for its nodes, then restart every rank',
    )
  if (rc === TPC_PROTOCOL)
    throw new LinkError(
      'E_TP_PROTOCOL',
      message,
      'run the same dbcluster release with the same model on every rank, then restart them all',
    )
  if (rc === SOCK_TIMEOUT)
    throw new LinkError(
      'E_TP_TIMEOUT',
      message,
      'a tensor-parallel rank stopped answering: check that every rank runs, then restart them all',
    )
  if (rc === SOCK_CLOSED)
    throw new LinkError(
      'E_TP_PEER_CLOSED',
      message,
      'a tensor-parallel rank went away: start it again with the same --tp-rank (if it was rank 0, start every rank)',
    )
  throw new LinkError('E_TP_SOCKET', message, 'check the address and the network between the ranks')
}

export class BlockingSocket {
  #fd: number

  /** `fd`: a connected socket from BlockingListener.accept or BlockingSocket.connect. */
  constructor(fd: number) {
    this.#fd = fd
  }

  static connect(host: string, port: number, timeoutMs: number): BlockingSocket {
    const rc = tpSocketLibrary().dbc_sock_connect(ptr(cString(host)), port, timeoutMs)
    if (rc < 0) failSocketCall(rc, `connecting to ${host}:${port}`)
    return new BlockingSocket(rc)
  }

  get closed(): boolean {
    return this.#fd < 0
  }

  /** Sends all of `out` while receiving exactly `into.byteLength` bytes; either may be empty. */
  exchange(out: Uint8Array, into: Uint8Array, timeoutMs: number): void {
    if (this.#fd < 0)
      throw new LinkError('E_TP_PEER_CLOSED', 'the tensor-parallel connection is closed', 'restart every rank')
    const rc = tpSocketLibrary().dbc_sock_exchange(
      this.#fd,
      ptr(out.byteLength ? out : EMPTY),
      out.byteLength,
      ptr(into.byteLength ? into : EMPTY),
      into.byteLength,
      timeoutMs,
    )
    if (rc < 0) failSocketCall(rc, 'tensor-parallel exchange')
  }

  send(out: Uint8Array, timeoutMs: number): void {
    this.exchange(out, new Uint8Array(0), timeoutMs)
  }

  receive(bytes: number, timeoutMs: number): Uint8Array {
    const into = new Uint8Array(bytes)
    this.exchange(new Uint8Array(0), into, timeoutMs)
    return into
  }

  /** Without waiting: whether the peer has closed or reset the connection (data waiting counts as alive). */
  peerGone(): boolean {
    return this.#fd < 0 || tpSocketLibrary().dbc_sock_peer_gone(this.#fd) === 1
  }

  /** Hands the descriptor to a new owner (a native sealed channel); this object is closed afterwards. */
  detach(): number {
    const fd = this.#fd
    if (fd < 0)
      throw new LinkError('E_TP_PEER_CLOSED', 'the tensor-parallel connection is closed', 'restart every rank')
    this.#fd = -1
    return fd
  }

  close(): void {
    if (this.#fd < 0) return
    tpSocketLibrary().dbc_sock_close(this.#fd)
    this.#fd = -1
  }
}

/** A listening socket; accept() blocks up to its timeout. */
export class BlockingListener {
  #fd: number

  private constructor(
    fd: number,
    readonly port: number,
  ) {
    this.#fd = fd
  }

  static listen(host: string, port: number): BlockingListener {
    const bound = new Int32Array(1)
    const rc = tpSocketLibrary().dbc_sock_listen(ptr(cString(host)), port, ptr(bound))
    if (rc < 0) failSocketCall(rc, `listening on ${host}:${port}`)
    return new BlockingListener(rc, bound[0]!)
  }

  accept(timeoutMs: number): BlockingSocket {
    const rc = tpSocketLibrary().dbc_sock_accept(this.#fd, timeoutMs)
    if (rc < 0) failSocketCall(rc, `waiting for a tensor-parallel rank on port ${this.port}`)
    return new BlockingSocket(rc)
  }

  close(): void {
    if (this.#fd < 0) return
    tpSocketLibrary().dbc_sock_close(this.#fd)
    this.#fd = -1
  }
}
