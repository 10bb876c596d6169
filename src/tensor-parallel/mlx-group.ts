/** MLX distributed through the glue (ffi/mlx_distributed.c): a group over ring (TCP) or jaccl (Thunderbolt RDMA), and
 * all_sum of host buffers (rdma-ping) or of mlx tensors (tensor parallel). The peers come from the environment MLX reads
 * (design/mlx-c.md §5); mlx-rendezvous.ts writes it. MLX's transports are not encrypted. */
import { DbcError } from '../errors.ts'
import type { Backend, Tensor } from '../tensor/backend.ts'
import { mlxGluePath } from '../tensor/mlx.ts'
import { openMlxDistributedLibrary, ptr, type MlxDistributedSymbols, type Pointer } from '../tensor/native.ts'
import { ShimBackend } from '../tensor/shim-backend.ts'
import type { TensorParallel } from '../tensor/tensor-parallel.ts'

export type MlxTransport = 'ring' | 'jaccl' | 'any'

const DTYPE_CODE = { f32: 0, bf16: 2, u8: 5 } as const

let lib: MlxDistributedSymbols | undefined
function open(): MlxDistributedSymbols {
  lib ??= openMlxDistributedLibrary(mlxGluePath(), "rebuild the glue with 'bash scripts/build-mlx-shim.sh'")
  return lib
}

const cstr = (s: string) => Buffer.from(`${s}\0`)
const lastError = (l: MlxDistributedSymbols) => String(l.dbc_last_error())

/** Sets (or, with undefined, unsets) variables in the C environment MLX reads; Bun's process.env does not reach it. */
export function setMlxEnvironment(env: Record<string, string | undefined>): void {
  const l = open()
  for (const [name, value] of Object.entries(env)) {
    if (l.dbc_dist_setenv(ptr(cstr(name)), ptr(cstr(value ?? ''))) !== 0)
      throw new DbcError('E_MLX_DISTRIBUTED', `cannot set ${name}: ${lastError(l)}`)
    if (value === undefined) delete process.env[name]
    else process.env[name] = value
  }
}

/** Whether this machine's libmlx can run `transport`, or why not (no glue, wrong MLX version, backend not compiled in). */
export function probeMlxTransport(transport: MlxTransport): { available: true } | { available: false; reason: string } {
  let l: MlxDistributedSymbols
  try {
    l = open()
  } catch (error) {
    return { available: false, reason: (error as Error).message }
  }
  const name = cstr(transport)
  if (l.dbc_dist_available(ptr(name)) === 1) return { available: true }
  const why = lastError(l)
  return { available: false, reason: why ? why : `this libmlx was built without the '${transport}' backend` }
}

export class MlxGroup {
  readonly rank: number
  readonly size: number
  #handle: Pointer | null
  readonly #lib: MlxDistributedSymbols
  readonly #info = new Int32Array(2)

  private constructor(
    l: MlxDistributedSymbols,
    handle: Pointer,
    readonly transport: MlxTransport,
  ) {
    this.#lib = l
    this.#handle = handle
    this.#check(l.dbc_dist_info(handle, ptr(this.#info)), 'reading the group')
    this.rank = this.#info[0]!
    this.size = this.#info[1]!
  }

  /** Joins the group the environment describes, blocking until every peer is connected or `timeoutMs` passed. After a
   * timeout MLX's join stays blocked on a helper thread, so the process should exit (a second join is refused). */
  static join(transport: MlxTransport, timeoutMs = 60_000): MlxGroup {
    const l = open()
    const out = new BigUint64Array(1)
    const name = cstr(transport)
    const rc = l.dbc_dist_init(ptr(name), 1, Math.max(1, Math.round(timeoutMs)), ptr(out))
    if (rc !== 0) {
      throw new DbcError(
        'E_MLX_DISTRIBUTED',
        `MLX ${transport} group could not form: ${lastError(l)}`,
        'check that every rank started within 30 s with the same hostfile, and that its ports are free and not firewalled',
      )
    }
    return new MlxGroup(l, Number(out[0]) as Pointer, transport)
  }

  #check(rc: number, what: string): void {
    if (rc !== 0)
      throw new DbcError('E_MLX_DISTRIBUTED', `MLX ${this.transport} ${what} failed: ${lastError(this.#lib)}`)
  }

  get #h(): Pointer {
    if (this.#handle === null) throw new DbcError('E_MLX_DISTRIBUTED', 'the MLX group was used after close()')
    return this.#handle
  }

  /** Sums `data` across the group in place (evaluated on MLX's CPU stream) and returns it. */
  allSumHost<T extends Float32Array | Uint8Array>(
    data: T,
    dtype: 'f32' | 'bf16' | 'u8' = data instanceof Float32Array ? 'f32' : 'u8',
  ): T {
    const count = dtype === 'f32' ? data.length : dtype === 'bf16' ? data.byteLength / 2 : data.byteLength
    this.#check(
      this.#lib.dbc_dist_all_sum_host(this.#h, ptr(data), count, DTYPE_CODE[dtype]),
      `all_sum of ${count} ${dtype}`,
    )
    return data
  }

  /** Rank 0's bytes on every rank (an all_sum to which the others add zeros): their length first, then the bytes.
   * Rank 0 passes the bytes; the others pass nothing and block until rank 0 sends. */
  broadcast(bytes?: Uint8Array): Uint8Array {
    if ((this.rank === 0) !== (bytes !== undefined))
      throw new DbcError('E_MLX_DISTRIBUTED', 'broadcast: rank 0 sends bytes, the other ranks receive')
    const header = new Uint8Array(4)
    if (bytes) new DataView(header.buffer).setUint32(0, bytes.length, true)
    this.allSumHost(header, 'u8')
    const n = new DataView(header.buffer).getUint32(0, true)
    if (n === 0) return new Uint8Array()
    return this.allSumHost(bytes ? bytes.slice() : new Uint8Array(n), 'u8')
  }

  /** Arms the rank watchdog (ffi/rank_watchdog.c): while any rank may be blocked inside a collective, a native thread
   * watches one TCP connection per rank pair with rank 0, and a rank whose process died ends this one with `message`
   * (exit code 75) instead of leaving it blocked forever. Rank 0 listens on an ephemeral port and tells the others
   * through the group; they connect to `rank0Host`. Collective: every rank calls it. */
  armWatchdog(rank0Host: string, message: string): void {
    const text = cstr(message)
    if (this.rank === 0) {
      const port = new Int32Array(1)
      this.#check(this.#lib.dbc_dist_watchdog_listen(this.size - 1, ptr(text), ptr(port)), 'watchdog listen')
      this.broadcast(new Uint8Array(port.buffer))
    } else {
      const port = new Int32Array(this.broadcast().slice().buffer)[0]!
      this.#check(this.#lib.dbc_dist_watchdog_connect(ptr(cstr(rank0Host)), port, ptr(text)), 'watchdog connect')
    }
  }

  /** A clean shutdown is coming: the other ranks closing is no longer a failure. */
  disarmWatchdog(): void {
    this.#lib.dbc_dist_watchdog_disarm()
  }

  /** The tensor-parallel seam over this group for tensors of the mlx backend. */
  tensorParallel(backend: Backend): TensorParallel {
    if (!(backend instanceof ShimBackend) || backend.name !== 'mlx') {
      throw new DbcError(
        'E_TP_BACKEND',
        `tensor parallel over MLX ${this.transport} needs the mlx backend, not ${backend.name}`,
        'use --backend mlx',
      )
    }
    const group = this
    return {
      rank: this.rank,
      size: this.size,
      allSum: (x: Tensor) =>
        backend.applyNative(x, (handle, out) => group.#lib.dbc_dist_all_sum(group.#h, handle, out)),
    }
  }

  close(): void {
    if (this.#handle === null) return
    const h = this.#handle
    this.#handle = null
    this.#check(this.#lib.dbc_dist_free(h), 'free')
  }
}
